from __future__ import annotations

from services.webhooks.fanout import Fanout, LeadTotal, Subscription
from services.webhooks.filters import Filters
from services.webhooks.payloads import EventType
from shared.events import Stage
from tests.webhooks.records import change, update

ALL = frozenset(
    e.value for e in (EventType.STAGE_CHANGED, EventType.SCORE_CHANGED, EventType.CREATED)
)


def test_each_endpoint_gets_what_its_filters_let_through() -> None:
    subs = [
        Subscription("all", ALL, Filters()),
        Subscription(
            "deals", frozenset({"lead.stage_changed"}), Filters(to_stages=[Stage.CUSTOMER])
        ),
        Subscription("hot", frozenset({"lead.score_changed"}), Filters(score_thresholds=[50])),
    ]
    fanout = Fanout({}, {})
    fanout.stage_changes(subs, [change("a", 1, Stage.PROSPECT), change("a", 2, Stage.CUSTOMER)])
    fanout.score_updates(subs, [update("a", 2, 60), update("a", 1, 40)])
    got = sorted(
        (m.endpoint_id, m.event_type.value, m.body.count(b'"sequence":2')) for m in fanout.messages
    )
    assert got == [
        ("all", "lead.created", 0),
        ("all", "lead.score_changed", 0),
        ("all", "lead.score_changed", 1),
        ("all", "lead.stage_changed", 0),
        ("all", "lead.stage_changed", 1),
        ("deals", "lead.stage_changed", 1),
        ("hot", "lead.score_changed", 1),  # 40 -> 60 crosses 50; 0 -> 40 does not
    ]
    assert fanout.totals["a"] == LeadTotal(2, 60, 40)


def test_a_record_read_again_after_a_crash_gives_the_same_messages() -> None:
    subs = [Subscription("hot", ALL, Filters(score_thresholds=[50]))]
    first = Fanout({"a": LeadTotal(3, 45, 30)}, {})
    first.score_updates(subs, [update("a", 4, 55)])
    again = Fanout(dict(first.totals), {})
    again.score_updates(subs, [update("a", 4, 55)])
    assert [m.webhook_id for m in again.messages] == [m.webhook_id for m in first.messages]
    assert len(first.messages) == 1
    stale = Fanout({"a": LeadTotal(5, 70, 55)}, {})
    stale.score_updates(subs, [update("a", 4, 55)])
    assert stale.messages == []
