"""Campaign audiences: CSV read in chunks, phone column found, rows judged, duplicates dropped."""

from __future__ import annotations

import io
import random

import pytest

from smsrelay.dispatch.audience import (
    AudienceError,
    AudienceLayout,
    CsvAudience,
    MissingValue,
    PersonalTemplate,
    PhoneSet,
    detect_delimiter,
    list_audience,
    missing_campaign_params,
)


def csv_file(text: str, *, encoding: str = "utf-8") -> io.BytesIO:
    return io.BytesIO(text.encode(encoding))


def paths(exc: AudienceError) -> list[str]:
    return [e.path for e in exc.errors]


# ---------------------------------------------------------------- the phone column


@pytest.mark.parametrize("header", ["phone", "To", "MSISDN"])
def test_the_phone_column_is_found_by_its_usual_names(header: str) -> None:
    audience = CsvAudience(csv_file(f"first_name,{header}\nAnn,+4915112345678\n"))
    assert audience.layout.phone_column == header
    assert audience.layout.attributes == ("first_name",)


def test_a_named_phone_column_is_used_whatever_its_case() -> None:
    audience = CsvAudience(csv_file("Mobile,name\n+4915112345678,Ann\n"), phone_column="mobile")
    assert audience.layout.phone_column == "Mobile"


def test_no_phone_column_is_refused_listing_the_columns() -> None:
    with pytest.raises(AudienceError) as refused:
        CsvAudience(csv_file("name,city\nAnn,Berlin\n"))
    assert paths(refused.value) == ["phone_column"]
    assert "name, city" in str(refused.value)


def test_a_named_phone_column_that_is_missing_is_refused() -> None:
    with pytest.raises(AudienceError, match="no column 'cell'"):
        CsvAudience(csv_file("phone,name\n"), phone_column="cell")


def test_a_header_naming_a_column_twice_or_not_at_all_is_refused() -> None:
    with pytest.raises(AudienceError) as refused:
        CsvAudience(csv_file("phone,name,name,\n"))
    messages = [e.message for e in refused.value.errors]
    assert any("column 4" in m for m in messages)
    assert any("'name' twice" in m for m in messages)


def test_an_empty_file_is_refused() -> None:
    with pytest.raises(AudienceError, match="empty"):
        CsvAudience(csv_file("\n\n"))


# ---------------------------------------------------------------- reading


def test_semicolons_a_bom_quoted_newlines_and_blank_lines_are_read() -> None:
    text = '\ufeffname;phone\nAnn;+4915112345678\n\n"Bob\nJr";+4915112345679\n'
    audience = CsvAudience(csv_file(text))
    assert audience.delimiter == ";"
    [chunk] = list(audience.chunks())
    # Row numbers as a spreadsheet shows them: header is row 1, the blank row 3 is kept.
    assert chunk.first_row == 2
    assert chunk.rows == [["Ann", "+4915112345678"], [], ["Bob\nJr", "+4915112345679"]]


def test_a_big_file_comes_in_chunks_of_the_asked_size() -> None:
    lines = ["phone,n"] + [f"+49151{i:08d},{i}" for i in range(12_345)]
    audience = CsvAudience(csv_file("\n".join(lines) + "\n"))
    chunks = list(audience.chunks(5000))
    assert [len(c.rows) for c in chunks] == [5000, 5000, 2345]
    assert [c.first_row for c in chunks] == [2, 5002, 10002]
    assert chunks[2].rows[-1] == ["+4915112345344"[:6] + "00012344", "12344"]


def test_a_file_that_is_not_utf8_is_refused() -> None:
    latin = csv_file("phone,name\n+4915112345678,Jos\xe9\n", encoding="latin-1")
    with pytest.raises(AudienceError, match="byte 0xe9 near row 1"):
        list(CsvAudience(latin).chunks())


def test_bad_bytes_far_into_a_file_are_refused_when_they_are_read() -> None:
    good = "".join(f"+49151{i:08d},x\n" for i in range(20_000))
    audience = CsvAudience(io.BytesIO(f"phone,name\n{good}".encode() + b"+4915112345678,\xff\n"))
    with pytest.raises(AudienceError, match="not UTF-8"):
        list(audience.chunks())


@pytest.mark.parametrize(
    ("line", "delimiter"), [("a,b", ","), ("a;b", ";"), ("a\tb", "\t"), ("a|b", "|"), ("a", ",")]
)
def test_the_delimiter_is_judged_by_the_header(line: str, delimiter: str) -> None:
    assert detect_delimiter(line) == delimiter


# ---------------------------------------------------------------- rows


layout = AudienceLayout(columns=("name", "phone", "city"), phone_index=1)


def test_a_row_gives_its_number_and_its_non_empty_attributes() -> None:
    assert layout.recipient(["Ann", "+4915112345678", ""]) == ("+4915112345678", {"name": "Ann"})
    assert layout.recipient(["Ann"]) == ("", {"name": "Ann"})


def test_a_row_with_more_values_than_columns_is_refused() -> None:
    with pytest.raises(ValueError, match="has 4 values but the header has 3 columns"):
        layout.recipient(["Ann", "+4915112345678", "Berlin", "extra"])
    assert layout.recipient(["Ann", "+4915112345678", "Berlin", ""])[0] == "+4915112345678"


def test_an_inline_audience_takes_every_parameter_as_a_column() -> None:
    entries = [
        {"to": "+4915112345678", "params": {"name": "Ann"}},
        {"to": "+4915112345679", "params": {"city": "Köln"}},
    ]
    list_layout, chunks = list_audience(entries)
    assert list_layout.columns == ("to", "name", "city")
    [chunk] = list(chunks)
    assert chunk.first_row == 1
    assert chunk.rows == [["+4915112345678", "Ann", ""], ["+4915112345679", "", "Köln"]]


# ---------------------------------------------------------------- personalisation


def test_a_text_is_personalised_with_params_and_dollar_aliases() -> None:
    template = PersonalTemplate(
        "Hi {{params.first_name}}, {{ $$city }} awaits! $$first_name", "body"
    )
    assert template.params == {"first_name", "city"}


def test_a_text_renders_each_recipients_values() -> None:
    template = PersonalTemplate("Hi {{params.first_name}} from $$city ({{campaign_id}})", "body")
    assert template.render({"first_name": "Zoë", "city": "Köln"}, "C1") == "Hi Zoë from Köln (C1)"
    with pytest.raises(MissingValue, match=r"missing_parameter:params\.city"):
        template.render({"first_name": "Ann"}, "C1")


@pytest.mark.parametrize("text", ["{{secret.key}}", "{{body}}", "{{to}}", "{{params.a"])
def test_a_text_may_not_use_secrets_or_message_fields(text: str) -> None:
    with pytest.raises(AudienceError) as refused:
        PersonalTemplate(text, "body")
    assert paths(refused.value) == ["body"]


def test_parameters_no_column_and_no_campaign_value_supply_are_named() -> None:
    missing = missing_campaign_params({"a", "b", "c"}, ["a"], {"c": "x"})
    assert missing == ["b"]


# ---------------------------------------------------------------- duplicates


def test_a_phone_set_tells_duplicates() -> None:
    numbers = PhoneSet()
    assert numbers.add("+4915112345678")
    assert not numbers.add("+4915112345678")
    assert "+4915112345678" in numbers and "+4915112345679" not in numbers
    assert len(numbers) == 1


def test_a_phone_set_grows_and_forgets_nothing() -> None:
    rng = random.Random(3)
    chosen = {f"+49151{rng.randrange(10**8):08d}" for _ in range(50_000)}
    numbers = PhoneSet(capacity=16)
    assert all(numbers.add(n) for n in chosen)
    assert len(numbers) == len(chosen)
    assert not any(numbers.add(n) for n in chosen)


def test_a_phone_set_takes_at_most_32_bytes_a_number() -> None:
    numbers = PhoneSet(capacity=16)
    for i in range(200_000):
        numbers.add(f"+49151{i * 1024:08d}")  # a common stride: no clustering
    assert len(numbers) == 200_000
    assert numbers.nbytes <= 32 * 200_000
