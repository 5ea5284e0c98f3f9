from __future__ import annotations

from services.webhooks.fanout import Fanout, LeadTotal, Subscription
from services.webhooks.filters import Filters
from services.webhooks.payloads import SUBSCRIBABLE
from shared.events import Stage
from tests.webhooks.records import account, change, update

ALL = frozenset(e.value for e in SUBSCRIBABLE)


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


def test_account_scores_go_to_the_endpoints_that_want_them_once_per_record() -> None:
    kind = frozenset({"account.score_changed"})
    subs = [
        Subscription("leads", ALL - kind, Filters()),
        Subscription("accounts", kind, Filters()),
        Subscription("big", kind, Filters(account_score_thresholds=[100])),
    ]
    fanout = Fanout({}, {})
    scores = [account("initech", 2, 120, 90), account("initech", 1, 90), account("acme", 1, 5)]
    fanout.account_scores(subs, scores)
    got = sorted((m.endpoint_id, m.event_type.value, m.lead_id) for m in fanout.messages)
    assert got == [
        ("accounts", "account.score_changed", None),
        ("accounts", "account.score_changed", None),
        ("accounts", "account.score_changed", None),
        ("big", "account.score_changed", None),  # 90 -> 120 crosses 100
    ]
    assert fanout.accounts == {"initech": 2, "acme": 1}
    assert fanout.account_notices[("big", "initech")] == 120


def test_an_account_record_read_again_or_out_of_date_makes_no_message() -> None:
    subs = [Subscription("moves", ALL, Filters(account_score_min_delta=10))]
    # 9 -> 20 was sent; read again after a crash, 9 would now be 11 from the last sent
    again = Fanout({}, {}, accounts={"initech": 2}, account_notices={("moves", "initech"): 20})
    again.account_scores(subs, [account("initech", 1, 9), account("initech", 2, 20, 9)])
    assert again.messages == []
    assert again.accounts == {"initech": 2}
    later = Fanout({}, {}, accounts={"initech": 2}, account_notices={("moves", "initech"): 20})
    later.account_scores(subs, [account("initech", 3, 31, 20)])
    assert [m.body.count(b'"sequence":3') for m in later.messages] == [1]
