"""Fixtures for the scoring domain tests: the shipped model and terse event builders."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import strategies as st
from pydantic import JsonValue

from services.scoring.lead import DEFAULT_HORIZON, LeadState
from services.scoring.model import ScoringModel, load_model
from services.scoring.scoring import Outcome, apply_event
from shared.events import Event, Stage

T0 = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)
"""A fixed Monday morning, safely in the past (events may not be from the future)."""

ICP_TRAITS: dict[str, JsonValue] = {
    "industry": "saas",
    "employees": 200,
    "budget_usd": 20000,
    "job_level": "vp",
}
"""A lead matching four fit rules of the default model: 20 + 15 + 20 + 20 = 75."""

MakeEvent = Callable[..., Event]
Replay = Callable[..., tuple[LeadState | None, list[Outcome]]]


@pytest.fixture(scope="session")
def model() -> ScoringModel:
    return load_model()


@pytest.fixture(scope="session")
def make_event() -> MakeEvent:
    """``make_event("page.viewed", at=..., path="/pricing")``: keywords become properties."""
    ids = itertools.count(1)

    def make(
        type_: str = "page.viewed",
        *,
        at: datetime = T0,
        event_id: str | None = None,
        lead_id: str = "ada@example.com",
        traits: dict[str, Any] | None = None,
        **properties: Any,
    ) -> Event:
        return Event(
            event_id=event_id or f"e-{next(ids)}",
            type=type_,
            lead_id=lead_id,
            occurred_at=at,
            properties=properties,
            traits=traits or {},
        )

    return make


@pytest.fixture(scope="session")
def replay(model: ScoringModel) -> Replay:
    """Apply events in order, as the worker does; returns the last state and every outcome."""

    def run(
        events: Iterable[Event],
        state: LeadState | None = None,
        scoring_model: ScoringModel | None = None,
        horizon: timedelta = DEFAULT_HORIZON,
    ) -> tuple[LeadState | None, list[Outcome]]:
        outcomes = []
        for event in events:
            outcome = apply_event(state, event, scoring_model or model, horizon)
            if outcome.skipped is None:
                state = outcome.state
            outcomes.append(outcome)
        return state, outcomes

    return run


EVENT_TYPES = [
    "page.viewed",
    "email.opened",
    "email.clicked",
    "form.submitted",
    "webinar.attended",
    "demo.requested",
    "email.unsubscribed",
    "lead.updated",
    "custom.thing",
    "deal.won",
    "lead.disqualified",
    "stage.set",
]
TRAIT_NAMES = ["industry", "employees", "budget_usd", "job_level", "competitor", "country"]
TRAIT_VALUES: list[Any] = ["saas", "retail", 200, 20000, 10, "vp", True, False, "US", None, "many"]


@st.composite
def event_streams(draw: st.DrawFn, max_size: int = 25, span_days: int = 60) -> list[Event]:
    """One lead's events over ``span_days`` (wider than the horizon), with some retries."""
    events: list[Event] = []
    for index in range(draw(st.integers(1, max_size))):
        if events and draw(st.integers(0, 9)) == 0:
            events.append(draw(st.sampled_from(events)))  # a platform retry
            continue
        type_ = draw(st.sampled_from(EVENT_TYPES))
        properties: dict[str, Any] = {}
        if type_ == "page.viewed":
            properties["path"] = draw(st.sampled_from(["/pricing", "/blog"]))
        if type_ == "stage.set":
            properties["stage"] = draw(st.sampled_from(list(Stage))).value
        traits = draw(
            st.dictionaries(st.sampled_from(TRAIT_NAMES), st.sampled_from(TRAIT_VALUES), max_size=3)
        )
        minutes = draw(st.integers(0, span_days * 24 * 60))
        events.append(
            Event(
                event_id=f"e-{index}",
                type=type_,
                lead_id="ada@example.com",
                occurred_at=T0 + timedelta(minutes=minutes),
                properties=properties,
                traits=traits,
            )
        )
    return events
