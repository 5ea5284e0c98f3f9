from __future__ import annotations

import orjson
from pydantic import JsonValue

from services.webhooks import payloads
from services.webhooks.payloads import MAX_PAYLOAD_BYTES, EventType
from shared.events import Stage
from tests.webhooks.records import account, change, update


def test_a_stage_change_carries_every_field_and_its_id_is_the_change_ids() -> None:
    webhook_id, body = payloads.stage_changed(change("ada", 2, Stage.OPPORTUNITY, Stage.PROSPECT))
    again, _ = payloads.stage_changed(change("ada", 2, Stage.OPPORTUNITY, Stage.PROSPECT))
    other, _ = payloads.stage_changed(change("ada", 3, Stage.CUSTOMER, Stage.OPPORTUNITY))
    assert webhook_id == again != other
    assert webhook_id.startswith("msg_")
    sent = orjson.loads(body)
    assert sent["type"] == "lead.stage_changed"
    assert sent["timestamp"] == "2026-11-20T10:00:00Z"
    assert sent["data"] == {
        "change_id": "ada#2",
        "lead_id": "ada",
        "sequence": 2,
        "from_stage": "prospect",
        "to_stage": "opportunity",
        "reason": "total >= 50",
        "trigger_event_id": "ada/e2",
        "occurred_at": "2026-11-20T10:00:00Z",
        "score": {"fit": 30, "engagement": 25, "total": 55},
        "model_version": "default-1",
    }


def test_a_score_change_says_what_moved_and_is_identified_by_lead_and_sequence() -> None:
    webhook_id, body = payloads.score_changed(update("ada", 4, 60), previous_total=45)
    assert webhook_id != payloads.score_changed(update("ada", 5, 60), 45)[0]
    assert webhook_id == payloads.score_changed(update("ada", 4, 60), 45)[0]
    data = orjson.loads(body)["data"]
    assert (data["total"], data["previous_total"], data["delta"], data["sequence"]) == (
        60,
        45,
        15,
        4,
    )


def test_a_huge_breakdown_is_cut_to_stay_under_the_limit_keeping_the_biggest_rules() -> None:
    _, body = payloads.score_changed(update("ada", 1, 10, rules=2000), previous_total=None)
    assert len(body) <= MAX_PAYLOAD_BYTES
    data = orjson.loads(body)["data"]
    assert data["breakdown_truncated"] is True
    assert data["breakdown"][0]["points"] == 1999


def test_created_is_once_per_lead_and_pings_are_never_the_same() -> None:
    first, body = payloads.created(update("ada", 1, 10))
    assert first == payloads.created(update("ada", 7, 30))[0]
    assert orjson.loads(body)["type"] == EventType.CREATED
    assert (
        payloads.ping(update("a", 1, 1).as_of, "n1")[0]
        != payloads.ping(update("a", 1, 1).as_of, "n2")[0]
    )


def test_an_account_score_says_what_moved_is_keyed_by_account_and_sequence_and_names_no_lead() -> (
    None
):
    webhook_id, body = payloads.account_score_changed(account("initech", 3, 145, previous=105))
    assert webhook_id == payloads.account_score_changed(account("initech", 3, 145, 105))[0]
    assert webhook_id != payloads.account_score_changed(account("initech", 4, 145, 105))[0]
    assert webhook_id != payloads.account_score_changed(account("acme", 3, 145, 105))[0]
    # an account and a lead of the same name and sequence are different events
    assert webhook_id != payloads.score_changed(update("initech", 3, 145), 105)[0]
    sent = orjson.loads(body)
    assert sent["type"] == "account.score_changed"
    assert sent["timestamp"] == "2026-11-20T10:00:00Z"
    assert sent["data"] == {
        "account_id": "initech",
        "sequence": 3,
        "total": 145,
        "previous_total": 105,
        "delta": 40,
        "fit": 10,
        "contacts": 2,
        "engaged_contacts": 1,
        "contact_total_sum": 135,
        "contact_total_max": 125,
        "as_of": "2026-11-20T10:00:00Z",
        "model_version": "default-1",
        "breakdown": [],
        "breakdown_truncated": False,
        "traits": {"name": "Initech"},
        "traits_truncated": False,
    }
    assert b"ada@initech.com" not in body
    first = orjson.loads(payloads.account_score_changed(account("initech", 1, 10))[1])
    assert (first["data"]["previous_total"], first["data"]["delta"]) == (None, None)


def test_huge_account_traits_and_breakdowns_are_cut_biggest_first_to_stay_under_the_limit() -> None:
    traits: dict[str, JsonValue] = {f"note-{i}": "y" * (i * 10) for i in range(200)}
    traits["name"] = "Initech"
    _, body = payloads.account_score_changed(account("initech", 1, 10, traits=traits))
    assert len(body) <= MAX_PAYLOAD_BYTES
    data = orjson.loads(body)["data"]
    assert data["traits_truncated"] is True
    assert data["traits"]["name"] == "Initech"  # the small ones stay
    assert "note-199" not in data["traits"]
    assert data["breakdown_truncated"] is False
    _, body = payloads.account_score_changed(account("initech", 1, 10, rules=2000))
    assert len(body) <= MAX_PAYLOAD_BYTES
    data = orjson.loads(body)["data"]
    assert (data["breakdown_truncated"], data["breakdown"][0]["points"]) == (True, 1999)
