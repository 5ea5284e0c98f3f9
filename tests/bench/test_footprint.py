"""Where the bytes go: every object reachable counted once, by holder and type."""

from __future__ import annotations

import enum
import sys
from dataclasses import dataclass, field

from bench.footprint import footprint, merged, total


class Colour(enum.Enum):
    RED = "red"


@dataclass(frozen=True, slots=True)
class Point:
    x: float
    y: float


@dataclass
class Holder:
    name: str
    points: list[Point] = field(default_factory=list)
    colour: Colour = Colour.RED


def test_a_deep_walk_sums_the_size_of_every_object_once() -> None:
    shared = Point(1.5, 2.5)
    items = [shared, shared, Point(3.5, 4.5)]
    shares = footprint([("items", items)])
    expected = (
        sys.getsizeof(items)
        + 2 * sys.getsizeof(shared)
        + sum(sys.getsizeof(v) for v in (1.5, 2.5, 3.5, 4.5))
    )
    assert total(shares) == expected
    assert shares[("items", "Point")].objects == 2
    assert shares[("items", "float")].objects == 4


def test_what_an_earlier_root_reached_is_not_counted_again() -> None:
    text = "a string shared by two roots"
    seen: set[int] = set()
    first = footprint([("a", [text])], seen=seen)
    second = footprint([("b", [text])], seen=seen)
    assert ("a", "str") in first
    assert ("b", "str") not in second


def test_instances_split_by_field_and_enum_members_are_not_data() -> None:
    holder = Holder("lead-1", [Point(0.25, 0.75)])
    shares = footprint([("holder", holder)], by_field=(Holder,))
    labels = merged(shares)
    assert set(labels) == {"Holder", "name", "points"}  # the instance and its dict: "Holder"
    assert labels["name"].bytes == sys.getsizeof("lead-1")
    assert ("Holder", "dict") in shares
    assert not any(kind == "Colour" for _, kind in shares)
