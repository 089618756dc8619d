"""The attempt writer: groups, order, failures and cancellation, against a fake store."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from smsrelay.dispatch.attempt_writer import AttemptWriter
from smsrelay.store.messages import AttemptRecord

AT = datetime(2030, 1, 1, tzinfo=UTC)


class FakeStore:
    """Plans a group as its message ids; a write stores them. Writes can be held at a gate,
    fail, or behave like `Database.write_at_once` when cancelled (roll back, or, once
    committed, store and let the cancellation through later)."""

    def __init__(self, *, fail_writes: int = 0, fail_plans: int = 0) -> None:
        self.groups: list[list[str]] = []
        self.log: list[tuple[str, list[str]]] = []
        self.fail_writes = fail_writes
        self.fail_plans = fail_plans
        self.gate: asyncio.Event | None = None
        self.commit_when_cancelled = False

    async def plan(self, db: Any, records: Sequence[AttemptRecord], *, worker_id: str) -> list[str]:
        ids = [r.message_id for r in records]
        self.log.append(("plan", ids))
        await asyncio.sleep(0)
        if self.fail_plans:
            self.fail_plans -= 1
            raise ConnectionError("database restarting")
        return ids

    async def write(self, db: Any, plan: list[str]) -> None:
        self.log.append(("write", plan))
        if self.gate is not None:
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                if not self.commit_when_cancelled:
                    raise  # rolled back
                self.groups.append(plan)
                task = asyncio.current_task()
                assert task is not None
                task.cancel()  # delivered at the caller's next await
                return
        if self.fail_writes:
            self.fail_writes -= 1
            raise ConnectionError("database restarting")
        self.groups.append(plan)
        self.log.append(("written", plan))


def records(*ids: str) -> list[AttemptRecord]:
    return [AttemptRecord(message_id=i, outcome="sent", at=AT) for i in ids]


def writer_for(store: FakeStore, **options: Any) -> AttemptWriter:
    return AttemptWriter(None, "w", plan=store.plan, write=store.write, **options)  # type: ignore[arg-type]


async def until(condition: Any) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def test_writer_commits_a_full_group_at_once() -> None:
    store = FakeStore()
    writer = writer_for(store, max_records=3, max_delay=3600)
    await writer.add(records("a", "b"))
    assert store.groups == []
    await writer.add(records("c", "d"))
    assert store.groups == [["a", "b", "c", "d"]]
    await writer.aclose()


async def test_writer_commits_a_partial_group_after_the_delay() -> None:
    store = FakeStore()
    writer = writer_for(store, max_records=100, max_delay=0)
    await writer.add(records("a"))
    await writer.add(records("b"))
    await until(lambda: store.groups == [["a", "b"]])
    await writer.aclose()


async def test_writer_keeps_records_when_the_write_fails() -> None:
    store = FakeStore(fail_writes=1)
    writer = writer_for(store, max_records=1, retry_delay=3600)
    await writer.add(records("a"))
    assert store.groups == []
    assert writer.pending == 1
    assert await writer.flush()
    assert store.groups == [["a"]]
    await writer.aclose()


async def test_next_group_is_planned_while_the_one_before_is_written() -> None:
    store = FakeStore()
    store.gate = asyncio.Event()
    writer = writer_for(store, max_records=1, max_delay=3600)
    first = asyncio.create_task(writer.add(records("a")))
    await until(lambda: ("write", ["a"]) in store.log)
    second = asyncio.create_task(writer.add(records("b", "c")))
    # "b, c" is planned while "a" is still being written, and written only after it.
    await until(lambda: ("plan", ["b", "c"]) in store.log)
    assert store.groups == []
    assert not first.done() and not second.done()
    store.gate.set()
    await asyncio.gather(first, second)
    assert store.groups == [["a"], ["b", "c"]]
    assert store.log.index(("written", ["a"])) < store.log.index(("write", ["b", "c"]))
    assert writer.flushes == 2
    assert writer.pending == 0


async def test_a_failed_write_puts_back_its_group_and_the_next_one_in_order() -> None:
    store = FakeStore(fail_writes=1)
    store.gate = asyncio.Event()
    writer = writer_for(store, max_records=10, max_delay=3600, retry_delay=3600)
    await writer.add(records("a", "b"))
    first = asyncio.create_task(writer.flush())
    await until(lambda: ("write", ["a", "b"]) in store.log)
    await writer.add(records("c"))
    await until(lambda: ("plan", ["c"]) in store.log)
    store.gate.set()
    assert await first is False
    # "c" was planned but not written: a later group may not overtake an earlier one.
    assert store.groups == []
    assert writer.pending == 3
    store.gate = None
    assert await writer.flush()
    assert store.groups == [["a", "b", "c"]]
    await writer.aclose()


async def test_a_failed_plan_keeps_its_records_after_the_group_being_written() -> None:
    store = FakeStore()
    store.gate = asyncio.Event()
    writer = writer_for(store, max_records=10, max_delay=3600, retry_delay=3600)
    await writer.add(records("a"))
    first = asyncio.create_task(writer.flush())
    await until(lambda: ("write", ["a"]) in store.log)
    store.fail_plans = 1
    await writer.add(records("b"))
    await until(lambda: ("plan", ["b"]) in store.log)
    store.gate.set()
    assert await first is False
    assert store.groups == [["a"]]  # the write under way was let finish
    assert writer.pending == 1
    assert await writer.flush()
    assert store.groups == [["a"], ["b"]]
    await writer.aclose()


@pytest.mark.parametrize("committed", [False, True], ids=["rolled-back", "committed"])
async def test_a_cancelled_flush_keeps_exactly_the_records_not_written(committed: bool) -> None:
    store = FakeStore()
    store.gate = asyncio.Event()
    store.commit_when_cancelled = committed
    writer = writer_for(store, max_records=10, max_delay=3600)
    await writer.add(records("a"))
    first = asyncio.create_task(writer.flush())
    await until(lambda: ("write", ["a"]) in store.log)
    await writer.add(records("b"))  # arrives while "a" is written: planned meanwhile
    await until(lambda: ("plan", ["b"]) in store.log)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    if committed:
        assert store.groups == [["a"]]
        assert writer.pending == 1
        assert writer.flushes == 1
    else:
        assert store.groups == []
        assert writer.pending == 2
        assert writer.flushes == 0
    store.gate = None
    assert await writer.flush()
    assert store.groups == ([["a"], ["b"]] if committed else [["a", "b"]])
    await writer.aclose()


async def test_senders_at_the_bound_go_on_once_a_group_is_stored() -> None:
    # Each sender waits only until the records unwritten fall below the bound, not until
    # the flush has written everything (which, with senders adding, may never end).
    store = FakeStore()
    first_gate = store.gate = asyncio.Event()
    writer = writer_for(store, max_records=2, max_delay=3600)
    first = asyncio.create_task(writer.add(records("a", "b")))
    await until(lambda: ("write", ["a", "b"]) in store.log)
    store.gate = asyncio.Event()  # the next write waits for this one
    second = asyncio.create_task(writer.add(records("c")))
    await until(lambda: ("plan", ["c"]) in store.log)
    assert writer.unwritten == 3
    assert not first.done() and not second.done()
    first_gate.set()
    await until(lambda: first.done() and second.done())
    assert store.groups == [["a", "b"]]  # "c" is still being written
    assert writer.unwritten == 1
    store.gate.set()
    assert await writer.flush()
    assert store.groups == [["a", "b"], ["c"]]
    assert writer.unwritten == 0
    await writer.aclose()


async def test_a_failed_flush_lets_the_senders_at_the_bound_go_on() -> None:
    store = FakeStore(fail_writes=1)
    writer = writer_for(store, max_records=2, max_delay=3600, retry_delay=3600)
    await asyncio.wait_for(writer.add(records("a", "b")), 1)
    assert store.groups == [] and writer.pending == 2  # kept for the retry
    assert await writer.flush()
    assert store.groups == [["a", "b"]]
    await writer.aclose()
