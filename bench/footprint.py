"""Where the bytes of objects in memory go: a deep walk, by what holds them and their type.

``sys.getsizeof`` of every object reachable from the roots, each object counted once
(an object shared by many roots, an interned string or a cached small int, counts for
the first that reaches it: what one more root costs is what it does not share).
Classes, modules, functions and enum members are the program's, not the data's: they are
neither counted nor walked. The instances of the ``by_field`` classes are split further,
each attribute labelled by its name, so a state's bytes show per field.
"""

from __future__ import annotations

import enum
import sys
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

NOT_DATA = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, enum.Enum)


@dataclass
class Share:
    """The objects of one (holder, type) and their bytes."""

    objects: int = 0
    bytes: int = 0


Footprint = dict[tuple[str, str], Share]
"""By (label, type name). The label is the root's; a ``by_field`` instance and its
attribute dict are labelled by its class, what its attributes hold by their names
(private ones by the class)."""


def footprint(
    roots: Iterable[tuple[str, object]],
    *,
    by_field: tuple[type, ...] = (),
    seen: set[int] | None = None,
) -> Footprint:
    """The bytes reachable from each ``(label, object)`` of ``roots``, not counted yet."""
    seen = set() if seen is None else seen
    result: Footprint = {}
    for label, root in roots:
        stack = [(label, root)]
        while stack:
            holder, obj = stack.pop()
            if id(obj) in seen or isinstance(obj, NOT_DATA):
                continue
            seen.add(id(obj))
            if isinstance(obj, by_field):
                holder = type(obj).__name__
            share = result.setdefault((holder, type(obj).__name__), Share())
            share.objects += 1
            share.bytes += sys.getsizeof(obj)
            if isinstance(obj, by_field):
                stack.extend((holder if name.startswith("_") else name, value)
                             for name, value in _attributes(obj))  # fmt: skip
                if hasattr(obj, "__dict__"):
                    seen.add(id(obj.__dict__))
                    dict_share = result.setdefault((holder, "dict"), Share())
                    dict_share.objects += 1
                    dict_share.bytes += sys.getsizeof(obj.__dict__)
                continue
            stack.extend((holder, child) for child in _children(obj))
    return result


def _children(obj: object) -> Iterator[object]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield key
            yield value
    elif isinstance(obj, list | tuple | set | frozenset):
        yield from obj
    elif not isinstance(obj, str | bytes | int | float | complex | bool):
        yield from (value for _, value in _attributes(obj))


def _attributes(obj: object) -> Iterator[tuple[str, object]]:
    instance = getattr(obj, "__dict__", None)
    if isinstance(instance, dict):
        yield from instance.items()
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if name not in ("__dict__", "__weakref__") and hasattr(obj, name):
                yield name, getattr(obj, name)


def total(shares: Footprint) -> int:
    return sum(share.bytes for share in shares.values())


def merged(shares: Footprint) -> dict[str, Share]:
    """By label alone (every type of a field together)."""
    result: dict[str, Share] = {}
    for (label, _), share in shares.items():
        into = result.setdefault(label, Share())
        into.objects += share.objects
        into.bytes += share.bytes
    return result
