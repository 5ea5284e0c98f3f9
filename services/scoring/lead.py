"""Everything needed to score one lead, and its plain-JSON form for the changelog.

The worker keeps one :class:`LeadState` per lead in memory and writes it, via
``to_json``, to the compacted ``leadflow.scoring-state`` topic after every
batch that touched it, so the state must stay small: event ids (for de-duplication)
and daily cap counters are kept only for a horizon of event time. An event older than
that horizon cannot be told apart from a retry any more, so it is not scored.

Times the state holds many of (the time of each event seen, each trait, each capped day)
are integers: microseconds or days since the epoch, in UTC. They are exact, compare
cheaply, and encode several times faster than a formatted time, which matters because
every record of the changelog carries a dozen of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from pydantic import JsonValue

from services.scoring.engagement import Engagement
from shared.events import Stage, format_time

DEFAULT_HORIZON = timedelta(days=30)
"""How far behind the lead's latest event an event may be and still be de-duplicated."""

STATE_FORMAT = 2
"""Version of the layout written. Format 1 (every time a formatted string, engagement rules
keyed by their index as text) is still read: a changelog written by an earlier version
restores, and each lead is written in format 2 the next time it changes."""

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

    model: object
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
    caps: dict[tuple[int, int], int] = field(default_factory=dict)
    """Scored occurrences per (engagement rule index, UTC day: see :func:`utc_day`) for
    capped rules."""
    seen: dict[str, int] = field(default_factory=dict)
    """Applied event ids and their event time (microseconds since the epoch), within the
    horizon."""
    score_sequence: int = 0
    """Events applied so far; the sequence of the latest score update."""
    change_sequence: int = 0
    """Stage changes emitted so far; the sequence of the latest stage change (gapless)."""
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
            self, traits=dict(self.traits), caps=dict(self.caps), seen=dict(self.seen)
        )
        copied.derived_fit = self.derived_fit  # immutable, and checked against the traits
        copied.fit_basis = self.fit_basis
        copied._seen_floor = self._seen_floor
        copied._caps_floor = self._caps_floor
        return copied

    def fit_holds(self, model: object) -> DerivedFit | None:
        """``derived_fit`` if it was computed under ``model`` from the current traits."""
        derived = self.derived_fit
        if derived is None or derived.model is not model:
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

    def skip_reason(self, event_id: str, at: datetime, horizon: timedelta) -> str | None:
        """Why an event must not be applied (a duplicate, or too old to de-duplicate)."""
        if event_id in self.seen:
            return f"duplicate: event {event_id!r} was already applied to this lead"
        if self.as_of is not None and at < _horizon_start(self.as_of, horizon):
            return (
                f"too old: {format_time(at)} is more than {horizon} before the lead's latest"
                f" event ({format_time(self.as_of)}), beyond the de-duplication horizon"
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

    def take_cap_slot(self, rule: int, day: int, max_per_day: int) -> bool:
        """Count one occurrence of a capped rule on ``day``; ``False`` once the cap is reached."""
        used = self.caps.get((rule, day), 0)
        if used >= max_per_day:
            return False
        self.caps[(rule, day)] = used + 1
        if self._caps_floor is not None and day < self._caps_floor:
            self._caps_floor = day
        return True

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

    def to_dict(self) -> dict[str, Any]:
        """The changelog record decoded: plain JSON types only (str, numbers, None, lists,
        dicts)."""
        data: dict[str, Any] = orjson.loads(self.to_json())
        return data

    def to_json(self) -> bytes:
        """The changelog record: written for every lead of every batch that touched it,
        so orjson formats ``as_of`` itself (as :func:`~shared.events.format_time` would:
        every time held here is in UTC) and the other times are integers already. Caps and
        engagement rules keep the order they were first counted in (a replay counts them in
        the same order, a restore keeps it): sorting them cost more than the rest."""
        return orjson.dumps(
            {
                "format": STATE_FORMAT,
                "lead_id": self.lead_id,
                "stage": self.stage,
                "as_of": self.as_of,
                "traits": {n: (t.value, t.set_at_us) for n, t in self.traits.items()},
                "engagement": self.engagement.to_dict(),
                "intent_event": self.intent_event,
                "caps": [(rule, day, n) for (rule, day), n in self.caps.items()],
                "seen": self.seen,
                "score_sequence": self.score_sequence,
                "change_sequence": self.change_sequence,
            },
            option=orjson.OPT_UTC_Z,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LeadState:
        """The inverse of :meth:`to_dict`, for format 2 and format 1 records; raises
        ``ValueError`` on an unknown layout."""
        layout = data.get("format")
        if layout == STATE_FORMAT:
            time_of: Callable[[Any], int] = int
            day_of: Callable[[Any], int] = int
        elif layout == 1:  # times as RFC 3339 strings, days as ISO dates
            time_of, day_of = _micros_of_text, _day_of_text
        else:
            raise ValueError(f"unknown lead state format {layout!r}")
        return cls(
            lead_id=data["lead_id"],
            stage=None if data["stage"] is None else Stage(data["stage"]),
            as_of=None if data["as_of"] is None else _time(data["as_of"]),
            traits={n: Trait(value, time_of(at)) for n, (value, at) in data["traits"].items()},
            engagement=Engagement.from_dict(data["engagement"]),
            intent_event=data["intent_event"],
            caps={(int(r), day_of(day)): int(n) for r, day, n in data["caps"]},
            seen={event_id: time_of(at) for event_id, at in data["seen"].items()},
            score_sequence=int(data["score_sequence"]),
            change_sequence=int(data["change_sequence"]),
        )


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _micros_of_text(text: str) -> int:
    return micros(_time(text))


def _day_of_text(text: str) -> int:
    return (date.fromisoformat(text) - EPOCH.date()).days


def _horizon_start(as_of: datetime, horizon: timedelta) -> datetime:
    """The oldest event time still de-duplicated (clamped: year 1 minus 30 days overflows)."""
    try:
        return as_of - horizon
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)
