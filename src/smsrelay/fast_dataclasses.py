"""Building frozen slots dataclasses on hot paths, without their `__init__`.

A frozen dataclass's `__init__` sets each field through `object.__setattr__`: building a
claim's messages (two objects, 27 fields, per row) cost more than reading the rows, and
one verdict and one attempt record per message of a batch answer added ~1.5 us each.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


def positional_builder(cls: type[Any], names: tuple[str, ...]) -> Callable[..., Any]:
    """A constructor of a frozen slots dataclass: its fields, `names` in this order.

    It sets the slots directly; defaults and default factories apply as in `__init__`.
    Callers pass fields by position, so they state the order: a class whose fields change
    fails here, at import, instead of building objects with values in the wrong fields.
    """
    fields = dataclasses.fields(cls)
    if tuple(f.name for f in fields) != names:
        raise TypeError(f"{cls.__name__}'s fields are no longer {names}: update its builders")
    if hasattr(cls, "__post_init__") or not all(f.name in cls.__slots__ for f in fields):
        raise TypeError(f"{cls.__name__} is not a slots dataclass without __post_init__")
    scope: dict[str, Any] = {"new": object.__new__, "cls": cls, "MISSING": dataclasses.MISSING}
    params, body = [], []
    for n, f in enumerate(fields):
        scope[f"set{n}"] = cls.__dict__[f.name].__set__
        if f.default is not dataclasses.MISSING:
            scope[f"default{n}"] = f.default
            params.append(f"{f.name}=default{n}")
        elif f.default_factory is not dataclasses.MISSING:
            scope[f"factory{n}"] = f.default_factory
            params.append(f"{f.name}=MISSING")
            body.append(f" if {f.name} is MISSING: {f.name} = factory{n}()")
        else:
            params.append(f.name)
        body.append(f" set{n}(obj, {f.name})")
    source = f"def build({', '.join(params)}):\n obj = new(cls)\n" + "\n".join(body)
    exec(source + "\n return obj\n", scope)
    build: Callable[..., Any] = scope["build"]
    return build
