"""Everything needed to score one lead, and its plain-JSON form for the changelog.

The worker keeps one :class:`LeadState` per lead in memory and writes it, via
``to_dict``, to the compacted ``leadflow.scoring-state`` topic after every
event, so the state must stay small: event ids (for de-duplication) and daily
cap counters are kept only for a horizon of event time. An event older than
that horizon cannot be told apart from a retry any more, so it is not scored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from pydantic import JsonValue

from services.scoring.engagement import Engagement
from shared.events import Stage, format_time

DEFAULT_HORIZON = timedelta(days=30)
"""How far behind the lead's latest event an event may be and still be de-duplicated."""

STATE_FORMAT = 1
"""Version of the ``to_dict`` layout, so a future layout can read (or refuse) old records."""


@dataclass(frozen=True, slots=True)
class Trait:
    """A trait's latest value and the event time that set it (older events cannot undo it)."""

    value: JsonValue
    set_at: datetime


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
    caps: dict[tuple[int, date], int] = field(default_factory=dict)
    """Scored occurrences per (engagement rule index, UTC day) for capped rules."""
    seen: dict[str, datetime] = field(default_factory=dict)
    """Applied event ids and their event time, within the horizon."""
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
    _seen_floor: datetime | None = field(default=None, init=False, compare=False, repr=False)
    """The oldest time in ``seen`` (or older); ``None``: unknown, computed when needed."""
    _caps_floor: date | None = field(default=None, init=False, compare=False, repr=False)
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
        for name, value in traits.items():
            current = self.traits.get(name)
            if current is None or at >= current.set_at:
                self.traits[name] = Trait(value, at)

    def take_cap_slot(self, rule: int, day: date, max_per_day: int) -> bool:
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
        self.seen[event_id] = at
        if self._seen_floor is not None and at < self._seen_floor:
            self._seen_floor = at
        if self.as_of is None or at > self.as_of:
            self.as_of = at
            cutoff = _horizon_start(at, horizon)
            first_day = cutoff.astimezone(UTC).date()
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
        """Plain JSON types only (str, numbers, None, lists, dicts)."""
        data: dict[str, Any] = orjson.loads(self.to_json())
        return data

    def to_json(self) -> bytes:
        """The changelog record: written for every lead of every batch, so orjson formats
        the times itself (as :func:`~shared.events.format_time` would: every time held
        here is in UTC) rather than Python formatting each one."""
        return orjson.dumps(
            {
                "format": STATE_FORMAT,
                "lead_id": self.lead_id,
                "stage": self.stage,
                "as_of": self.as_of,
                "traits": {n: (t.value, t.set_at) for n, t in self.traits.items()},
                "engagement": self.engagement.to_dict(),
                "intent_event": self.intent_event,
                "caps": [(rule, day, n) for (rule, day), n in sorted(self.caps.items())],
                "seen": self.seen,
                "score_sequence": self.score_sequence,
                "change_sequence": self.change_sequence,
            },
            option=orjson.OPT_UTC_Z,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LeadState:
        """The inverse of :meth:`to_dict`; raises ``ValueError`` on an unknown layout."""
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown lead state format {data.get('format')!r}")
        return cls(
            lead_id=data["lead_id"],
            stage=None if data["stage"] is None else Stage(data["stage"]),
            as_of=None if data["as_of"] is None else _time(data["as_of"]),
            traits={n: Trait(value, _time(at)) for n, (value, at) in data["traits"].items()},
            engagement=Engagement.from_dict(data["engagement"]),
            intent_event=data["intent_event"],
            caps={(int(r), date.fromisoformat(day)): int(n) for r, day, n in data["caps"]},
            seen={event_id: _time(at) for event_id, at in data["seen"].items()},
            score_sequence=int(data["score_sequence"]),
            change_sequence=int(data["change_sequence"]),
        )


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _horizon_start(as_of: datetime, horizon: timedelta) -> datetime:
    """The oldest event time still de-duplicated (clamped: year 1 minus 30 days overflows)."""
    try:
        return as_of - horizon
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)
