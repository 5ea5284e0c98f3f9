"""Everything needed to score one lead, and its plain-JSON form for the changelog.

The worker keeps one :class:`LeadState` per lead in memory and writes it (in the layout of
:mod:`services.scoring.state_records`) to the compacted ``leadflow.scoring-state`` topic
after every batch that touched it, so the state must stay small: event ids (for de-duplication)
and daily cap counters are kept only for a horizon of event time. An event older than
that horizon cannot be told apart from a retry any more, so it is not scored.

Times the state holds many of (the time of each event seen, each trait, each capped day)
are integers: microseconds or days since the epoch, in UTC. They are exact, compare
cheaply, and encode several times faster than a formatted time, which matters because
every record of the changelog carries a dozen of them.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import JsonValue

from services.scoring.engagement import Engagement
from shared.events import Stage, format_time

DEFAULT_HORIZON = timedelta(days=30)
"""How far behind the lead's latest event an event may be and still be de-duplicated."""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_DAY_US = 86_400_000_000


def micros(at: datetime) -> int:
    """An aware time as microseconds since the epoch: exact, unlike ``timestamp()``."""
    return (at - EPOCH) // _MICROSECOND


_OLDEST_US = micros(datetime.min.replace(tzinfo=UTC))
"""The oldest time Python holds: horizons are clamped to it."""


def from_micros(at_us: int) -> datetime:
    return EPOCH + timedelta(microseconds=at_us)


def utc_day(at_us: int) -> int:
    """The UTC day of a time, as days since 1970-01-01 (daily caps count per UTC day)."""
    return at_us // _DAY_US


class SkipKind(enum.Enum):
    """Why an event is not applied: a retry (no output at all), or too old to tell."""

    DUPLICATE = "duplicate"
    TOO_OLD = "too_old"
    """Beyond the de-duplication horizon: never dropped silently, it is a dead letter."""


@dataclass(frozen=True, slots=True)
class Skip:
    kind: SkipKind
    reason: str
    """For people: the dead letter's reason, the log line."""


@dataclass(frozen=True, slots=True)
class Trait:
    """A trait's latest value and the event time that set it (older events cannot undo it)."""

    value: JsonValue
    set_at_us: int
    """Microseconds since the epoch."""


@dataclass(frozen=True, slots=True)
class DerivedFit:
    """The fit that one set of matching fit rules gives under one model.

    Fit is a pure function of (model, trait values) and most events carry no traits, so a
    lead keeps its fit until its traits change (see :attr:`LeadState.fit_basis`). Values
    are shared by every lead with the same matches (interned by the scoring module), so the
    memory, and the garbage collector's work, per lead stays one tuple.
    """

    rulebook: object
    """The :class:`~services.scoring.rulebook.RuleBook` (so: the model) it was computed under."""
    contributions: tuple[Any, ...]
    fit: float


@dataclass
class LeadState:
    """One lead's scoring state; :func:`~services.scoring.scoring.apply_event` evolves copies."""

    lead_id: str
    stage: Stage | None = None
    as_of: datetime | None = None
    """The latest event time seen for the lead: the time engagement is valued at."""
    traits: dict[str, Trait] = field(default_factory=dict)
    engagement: Engagement = field(default_factory=Engagement)
    intent_event: str | None = None
    """The first intent event type seen (e.g. ``demo.requested``); ``None`` if none ever."""
    caps: dict[tuple[str, int], int] = field(default_factory=dict)
    """Scored occurrences per (engagement rule id, UTC day: see :func:`utc_day`) for
    capped rules."""
    seen: dict[str, int] = field(default_factory=dict)
    """Applied event ids and their event time (microseconds since the epoch), within the
    horizon."""
    score_sequence: int = 0
    """Events applied so far; the sequence of the latest score update."""
    change_sequence: int = 0
    """Stage changes emitted so far; the sequence of the latest stage change (gapless)."""
    history: list[bytes] | None = field(default=None, compare=False)
    """An anonymous lead's applied events as they were read (JSON), in the order applied:
    what an identity merge carries to the known lead (:mod:`services.scoring.identity`);
    ``None`` for other leads."""
    history_lost: int = field(default=0, compare=False)
    """Applied events of the lead that ``history`` does not hold (over its bound, or
    applied before leads kept one)."""
    # Derived, never serialised or compared; maintained by the methods below.
    derived_fit: DerivedFit | None = field(default=None, init=False, compare=False, repr=False)
    """The fit under the model last scored with, valid while :meth:`fit_holds`."""
    fit_basis: tuple[Trait, ...] = field(default=(), init=False, compare=False, repr=False)
    """The :class:`Trait` objects ``derived_fit`` was computed from. Traits are immutable
    and replaced on every change, so identity tells whether the fit still holds."""
    _seen_floor: int | None = field(default=None, init=False, compare=False, repr=False)
    """The oldest time in ``seen`` (or older); ``None``: unknown, computed when needed."""
    _caps_floor: int | None = field(default=None, init=False, compare=False, repr=False)
    """The oldest day in ``caps`` (or older); ``None``: unknown, computed when needed."""

    @property
    def intent_seen(self) -> bool:
        return self.intent_event is not None

    def copy(self) -> LeadState:
        """A copy that can be changed without touching this state (engagement is immutable)."""
        copied = dataclasses.replace(
            self,
            traits=dict(self.traits),
            caps=dict(self.caps),
            seen=dict(self.seen),
            history=None if self.history is None else list(self.history),
        )
        copied.derived_fit = self.derived_fit  # immutable, and checked against the traits
        copied.fit_basis = self.fit_basis
        copied._seen_floor = self._seen_floor
        copied._caps_floor = self._caps_floor
        return copied

    def fit_holds(self, rulebook: object) -> DerivedFit | None:
        """``derived_fit`` if it was computed under ``rulebook`` from the current traits."""
        derived = self.derived_fit
        if derived is None or derived.rulebook is not rulebook:
            return None
        basis, traits = self.fit_basis, self.traits
        if len(basis) != len(traits):
            return None
        for held, trait in zip(basis, traits.values(), strict=True):
            if held is not trait:
                return None
        return derived

    def keep_fit(self, derived: DerivedFit) -> None:
        self.derived_fit = derived
        self.fit_basis = tuple(self.traits.values())

    def trait_values(self) -> dict[str, JsonValue]:
        return {name: trait.value for name, trait in self.traits.items()}

    def skip_reason(self, event_id: str, at: datetime, horizon: timedelta) -> Skip | None:
        """Why an event must not be applied (a duplicate, or too old to de-duplicate)."""
        if event_id in self.seen:
            reason = f"duplicate: event {event_id!r} was already applied to this lead"
            return Skip(SkipKind.DUPLICATE, reason)
        if self.as_of is not None and at < _horizon_start(self.as_of, horizon):
            return Skip(
                SkipKind.TOO_OLD,
                f"too old: {format_time(at)} is more than {horizon} before the lead's latest"
                f" event ({format_time(self.as_of)}), beyond the de-duplication horizon",
            )
        return None

    def merge_traits(self, traits: Mapping[str, JsonValue], at: datetime) -> None:
        """Latest event time wins per trait; on a tie, the later-applied event wins."""
        if not traits:
            return
        at_us = micros(at)
        for name, value in traits.items():
            current = self.traits.get(name)
            if current is None or at_us >= current.set_at_us:
                self.traits[name] = Trait(value, at_us)

    def take_cap_slot(self, rule: str, day: int, max_per_day: int) -> bool:
        """Count one occurrence of a capped rule on ``day``; ``False`` once the cap is reached."""
        used = self.caps.get((rule, day), 0)
        if used >= max_per_day:
            return False
        self.caps[(rule, day)] = used + 1
        if self._caps_floor is not None and day < self._caps_floor:
            self._caps_floor = day
        return True

    def remember(self, event_id: str, at: datetime) -> None:
        """Hold ``event_id`` for de-duplication without making ``at`` the lead's latest
        event time (an identity merge is not an event of the lead)."""
        at_us = micros(at)
        self.seen[event_id] = at_us
        if self._seen_floor is not None and at_us < self._seen_floor:
            self._seen_floor = at_us

    def record(self, event_id: str, at: datetime, horizon: timedelta) -> datetime:
        """Remember an applied event, advance ``as_of``, forget what fell out of the horizon.

        Returns the new ``as_of``.
        """
        at_us = micros(at)
        self.seen[event_id] = at_us
        if self._seen_floor is not None and at_us < self._seen_floor:
            self._seen_floor = at_us
        if self.as_of is None or at > self.as_of:
            self.as_of = at
            cutoff = max(at_us - horizon // _MICROSECOND, _OLDEST_US)
            first_day = utc_day(cutoff)
            # Rebuilding costs O(entries): do it only when something actually expires, which
            # the floors (the oldest time and day held) tell in O(1).
            if self._seen_floor is None:
                self._seen_floor = min(self.seen.values())
            if self._seen_floor < cutoff:
                self.seen = {id_: when for id_, when in self.seen.items() if when >= cutoff}
                self._seen_floor = min(self.seen.values())  # holds at least this event
            if self.caps:
                if self._caps_floor is None:
                    self._caps_floor = min(day for _, day in self.caps)
                if self._caps_floor < first_day:
                    self.caps = {key: n for key, n in self.caps.items() if key[1] >= first_day}
                    self._caps_floor = min((day for _, day in self.caps), default=None)
        return self.as_of


def _horizon_start(as_of: datetime, horizon: timedelta) -> datetime:
    """The oldest event time still de-duplicated (clamped: year 1 minus 30 days overflows)."""
    try:
        return as_of - horizon
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)
