"""Keeping Python's cyclic garbage collector off the lead states.

A worker holds every lead of its partitions in memory for as long as it owns them: a
million leads are millions of tracked objects. CPython's full collection walks all of
them, which stalls the worker for a second or more, long enough to show in the latency
from a 202 to the REST API. Objects that outlive a few seconds here are lead states, so
the worker moves them out of the collector's sight with ``gc.freeze()``: young objects
are still collected as usual, and frozen ones are still freed by reference counting the
moment they are dropped (lead states hold no reference cycles). What freezing can keep is
cyclic garbage that was already old when frozen; a full collection after every
rebalance, and at a long interval, gives that back.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable


class HeapFreezer:
    def __init__(
        self,
        freeze_every: float,
        collect_every: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._freeze_every = freeze_every
        self._collect_every = collect_every
        self._clock = clock
        self._frozen_at = self._collected_at = clock()

    def settle(self) -> None:
        """A full collection, then freeze what survives: once the partitions' states are
        restored (a rebalance pauses the worker anyway)."""
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self._frozen_at = self._collected_at = self._clock()

    def tick(self) -> None:
        """Between batches: freeze the survivors of the last interval; rarely, settle."""
        now = self._clock()
        if now - self._collected_at >= self._collect_every:
            self.settle()
        elif now - self._frozen_at >= self._freeze_every:
            gc.collect(1)  # the young generations: cheap, and no young garbage gets frozen
            gc.freeze()
            self._frozen_at = now
