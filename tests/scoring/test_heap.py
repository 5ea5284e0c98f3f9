"""The collector policy of the worker, on a clock the test moves."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from services.scoring.heap import HeapFreezer


@pytest.fixture
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_survivors_are_frozen_once_per_interval(thawed: None) -> None:
    clock = Clock()
    heap = HeapFreezer(freeze_every=10, collect_every=900, clock=clock)
    heap.tick()
    assert gc.get_freeze_count() == 0
    clock.now = 10
    kept = [{"lead": index} for index in range(1000)]
    heap.tick()
    assert gc.get_freeze_count() >= len(kept)


def test_frozen_cyclic_garbage_is_given_back_by_the_full_collection(thawed: None) -> None:
    clock = Clock()
    heap = HeapFreezer(freeze_every=10, collect_every=900, clock=clock)

    class Node:
        other: object

    first, second = Node(), Node()
    first.other, second.other = second, first  # a cycle: only the collector frees it
    alive = weakref.ref(first)
    clock.now = 10
    heap.tick()
    del first, second
    gc.collect()
    assert alive() is not None  # frozen: out of the collector's sight
    clock.now = 900
    heap.tick()  # the full collection
    assert alive() is None
