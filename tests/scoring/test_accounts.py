"""Accounts without a broker: membership precedence, the lead stage's contributions, the
account roll-up and its fit, reassignment, and that the two stages together give each
account exactly its contacts' latest totals, however the batches fall."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import JsonValue

from services.scoring.account_batch import fold_batch
from services.scoring.account_contributions import contribute
from services.scoring.account_records import account_record, read_account
from services.scoring.batch import score_batch
from services.scoring.lead import LeadState
from services.scoring.membership import (
    GroupCall,
    Membership,
    load_free_mail_domains,
    membership_key,
    membership_record,
    read_membership,
    resolve_account,
    web_domain,
)
from services.scoring.model import AccountMembership, ModelError, ScoringModel, load_model
from services.scoring.rollup import AccountState, roll_up
from services.scoring.scoring import apply_event
from shared.account_events import AccountContribution, ContactScore
from shared.events import LEAD_ERASED, Event, Stage
from tests.scoring.conftest import ICP_TRAITS, T0, MakeEvent

FREE_MAIL = load_free_mail_domains()
RULES = AccountMembership()
WITH_EMAIL = AccountMembership(email_domains=True)


@dataclass(frozen=True)
class Record:
    offset: int
    value: bytes | None
    key: bytes | None = None
    topic: str = "t"
    partition: int = 0


class Stages:
    """The lead stage and the account stage of one partition each, fed batch by batch."""

    def __init__(self, model: ScoringModel) -> None:
        self.model = model
        self.leads: dict[str, LeadState] = {}
        self.memberships: dict[str, Membership] = {}
        self.accounts: dict[str, AccountState] = {}
        self.lead_offset = -1
        self.contributions: list[tuple[bytes, bytes]] = []
        self.changelog: list[tuple[bytes, bytes | None]] = []
        self.folded = -1

    def score(self, events: list[Event]) -> list[AccountContribution]:
        start = self.lead_offset + 1
        records = [Record(start + i, e.to_json()) for i, e in enumerate(events)]
        result = score_batch(records, self.leads, self.model, applied_offset=self.lead_offset)
        self.lead_offset = result.applied_offset
        out = contribute(result, self.memberships, self.model, FREE_MAIL)
        self.contributions += out.contributions
        self.changelog += out.changelog
        return [AccountContribution.model_validate_json(v) for _, v in out.contributions]

    def fold(self, upto: int | None = None) -> None:
        """Fold the contributions not folded yet (up to index ``upto``) in one batch."""
        end = len(self.contributions) if upto is None else upto
        records = [
            Record(i, value) for i, (_, value) in enumerate(self.contributions) if i <= end - 1
        ]
        fold_batch(records, self.accounts, self.model, applied_offset=self.folded)
        self.folded = max(self.folded, end - 1)

    def contacts(self) -> dict[str, dict[str, float]]:
        return {
            account_id: {lead: c.total for lead, c in state.contacts.items()}
            for account_id, state in self.accounts.items()
            if state.contacts
        }


def group_call(
    group_id: str, traits: dict[str, Any] | None = None, at: Any = T0, lead: str = "ada@example.com"
) -> Event:
    """A group call as ingest maps Segment's: the group's traits are properties."""
    return Event(
        event_id=f"g-{group_id}-{at.isoformat()}",
        type="segment.group",
        lead_id=lead,
        occurred_at=at,
        properties={"group_id": group_id, "traits": traits or {}},
    )


def kinds(contributions: list[AccountContribution]) -> list[tuple[str, str, str]]:
    return [(c.kind.value, c.account_id, c.lead_id) for c in contributions]


# --- membership precedence ------------------------------------------------------------


def test_a_group_call_beats_every_trait() -> None:
    traits = {"account_id": "crm-7", "company_domain": "acme.com"}
    group = GroupCall("group-1", 0)
    assert resolve_account("ada@acme.com", traits, group, RULES, FREE_MAIL) == "group-1"


def test_the_account_id_trait_beats_the_company_domain() -> None:
    traits = {"account_id": "crm-7", "company_domain": "acme.com"}
    assert resolve_account("ada@acme.com", traits, None, RULES, FREE_MAIL) == "crm-7"
    assert resolve_account("x", {"account_id": 42}, None, RULES, FREE_MAIL) == "42"


def test_unusable_account_ids_fall_through_to_the_domain() -> None:
    bad_ids: list[JsonValue] = ["  ", True, 1.5, {"id": 1}, "a\x00b", "x" * 257]
    for bad in bad_ids:
        traits: dict[str, JsonValue] = {
            "account_id": bad,
            "company_domain": "https://www.Acme.com/about",
        }
        assert resolve_account("x", traits, None, RULES, FREE_MAIL) == "acme.com"


def test_company_domains_are_normalised() -> None:
    assert web_domain("https://www.Acme.com/about?x=1") == "acme.com"
    assert web_domain("ACME.COM.") == "acme.com"
    assert web_domain("acme.co.uk:443") == "acme.co.uk"
    assert web_domain("http://shop.acme.io") == "shop.acme.io"
    for bad in ("acme", "not a domain", "", 12, None, "-acme.com", "acme..com"):
        assert web_domain(bad) is None


def test_email_domains_are_off_by_default() -> None:
    assert resolve_account("ada@acme.com", {}, None, RULES, FREE_MAIL) is None


def test_business_email_domains_name_the_account_when_on() -> None:
    assert resolve_account("ada@Acme.com", {}, None, WITH_EMAIL, FREE_MAIL) == "acme.com"
    traits = {"email": "ada@initech.com"}
    assert resolve_account("crm-1", traits, None, WITH_EMAIL, FREE_MAIL) == "initech.com"


def test_free_mail_addresses_name_no_account() -> None:
    assert "gmail.com" in FREE_MAIL
    assert resolve_account("ada@gmail.com", {}, None, WITH_EMAIL, FREE_MAIL) is None
    assert resolve_account("ada@GMAIL.com", {}, None, WITH_EMAIL, FREE_MAIL) is None


def test_an_explicit_trait_beats_the_email_domain() -> None:
    traits = {"company_domain": "acme.com"}
    assert resolve_account("ada@initech.com", traits, None, WITH_EMAIL, FREE_MAIL) == "acme.com"


def test_the_free_mail_list_is_data_with_comments(tmp_path: Any) -> None:
    path = tmp_path / "free.txt"
    path.write_text("# providers\nExample.org  # a comment\n\nmail.test\n")
    assert load_free_mail_domains(path) == {"example.org", "mail.test"}


# --- the lead stage's contributions ---------------------------------------------------


def test_a_lead_joins_its_account_then_reports_changes(
    model: ScoringModel, make_event: MakeEvent
) -> None:
    stages = Stages(model)
    joined = stages.score([make_event("lead.updated", traits={"account_id": "acme", **ICP_TRAITS})])
    assert kinds(joined) == [("joined", "acme", "ada@example.com")]
    assert joined[0].score == ContactScore(fit=75, engagement=0, total=75, stage=Stage.PROSPECT)
    changed = stages.score([make_event("form.submitted"), make_event("webinar.attended")])
    assert kinds(changed) == [("changed", "acme", "ada@example.com")]  # one per batch
    assert changed[0].score is not None
    assert changed[0].score.total == 100
    # an event that changes nothing of the score contributes nothing
    assert stages.score([make_event("custom.thing")]) == []


def test_a_lead_without_an_account_contributes_nothing(
    model: ScoringModel, make_event: MakeEvent
) -> None:
    stages = Stages(model)
    assert stages.score([make_event("lead.updated", traits=ICP_TRAITS)]) == []
    assert stages.memberships == {}
    assert stages.changelog == []


def test_reassignment_leaves_the_old_account_once_and_joins_the_new(
    model: ScoringModel, make_event: MakeEvent
) -> None:
    stages = Stages(model)
    stages.score([make_event("lead.updated", traits={"account_id": "acme", **ICP_TRAITS})])
    stages.score([make_event("form.submitted")])
    stages.fold()
    assert stages.contacts() == {"acme": {"ada@example.com": 85}}
    moved = stages.score([make_event("lead.updated", traits={"account_id": "initech"})])
    assert kinds(moved) == [
        ("left", "acme", "ada@example.com"),
        ("joined", "initech", "ada@example.com"),
    ]
    stages.score([make_event("webinar.attended")])
    stages.fold()
    assert stages.contacts() == {"initech": {"ada@example.com": 100}}
    assert stages.accounts["acme"].contacts == {}
    acme = roll_up(stages.accounts["acme"], model)
    assert (acme.contacts, acme.contact_total_sum, acme.contact_total_max) == (0, 0, None)


def test_back_and_forth_in_one_batch_counts_the_lead_once(
    model: ScoringModel, make_event: MakeEvent
) -> None:
    stages = Stages(model)
    stages.score([make_event("lead.updated", traits={"account_id": "acme", **ICP_TRAITS})])
    stages.fold()
    batch = [
        make_event("lead.updated", traits={"account_id": "initech"}),
        make_event("form.submitted"),
        make_event("lead.updated", traits={"account_id": "acme"}),
    ]
    assert kinds(stages.score(batch)) == [("changed", "acme", "ada@example.com")]
    stages.fold()
    assert stages.contacts() == {"acme": {"ada@example.com": 85}}


def test_losing_the_account_trait_leaves_and_forgets_the_membership(
    model: ScoringModel, make_event: MakeEvent
) -> None:
    stages = Stages(model)
    stages.score([make_event("lead.updated", traits={"account_id": "acme"})])
    assert stages.changelog[-1][0] == membership_key("ada@example.com")
    left = stages.score([make_event("lead.updated", traits={"account_id": None})])
    assert kinds(left) == [("left", "acme", "ada@example.com")]
    assert stages.memberships == {}
    assert stages.changelog[-1] == (membership_key("ada@example.com"), None)


def test_a_group_call_places_the_lead_and_gives_the_account_traits(
    model: ScoringModel, make_event: MakeEvent
) -> None:
    stages = Stages(model)
    first = stages.score(
        [
            make_event("lead.updated", traits={"account_id": "crm-7"}),
            group_call("g-1", {"industry": "saas", "employees": 500}),
        ]
    )
    assert kinds(first) == [
        ("traits", "g-1", "ada@example.com"),
        ("joined", "g-1", "ada@example.com"),
    ]
    assert first[0].traits == {"industry": "saas", "employees": 500}
    # an older group call arriving late gives its account traits but does not move the lead
    late = stages.score([group_call("g-0", {"x": 1}, at=T0 - timedelta(days=1))])
    assert kinds(late) == [("traits", "g-0", "ada@example.com")]
    assert stages.memberships["ada@example.com"].account_id == "g-1"
    newer = stages.score([group_call("g-2", at=T0 + timedelta(hours=1))])
    assert kinds(newer) == [
        ("left", "g-1", "ada@example.com"),
        ("joined", "g-2", "ada@example.com"),
    ]


def test_an_erased_lead_leaves_its_account(model: ScoringModel, make_event: MakeEvent) -> None:
    stages = Stages(model)
    stages.score([make_event("lead.updated", traits={"account_id": "acme", **ICP_TRAITS})])
    stages.fold()
    erased = stages.score([make_event("form.submitted"), make_event(LEAD_ERASED)])
    assert kinds(erased) == [("left", "acme", "ada@example.com")]
    assert stages.changelog[-1] == (membership_key("ada@example.com"), None)
    stages.fold()
    assert stages.contacts() == {}
    # the id used again afterwards is a new lead, a new contact
    again = stages.score(
        [make_event(LEAD_ERASED), make_event("lead.updated", traits={"account_id": "acme"})]
    )
    assert kinds(again) == [("joined", "acme", "ada@example.com")]


def test_memberships_survive_their_changelog_records() -> None:
    score = ContactScore(fit=1.5, engagement=2.25, total=3.75, stage=Stage.LEAD)
    for membership in (
        Membership(GroupCall("g", 123), "g", score),
        Membership(None, "acme", score),
        Membership(GroupCall("g", -5), None, None),
    ):
        assert read_membership(membership_record(membership)) == membership
    with pytest.raises(ValueError, match="format"):
        read_membership(orjson.dumps({"format": 9}))


# --- the account roll-up --------------------------------------------------------------


def contribution(kind: str, lead: str, total: float = 0, engagement: float = 0) -> bytes:
    score = None
    if kind in ("joined", "changed"):
        score = {"fit": total - engagement, "engagement": engagement, "total": total}
        score["stage"] = "lead"  # type: ignore[assignment]
    value: dict[str, Any] = {"account_id": "acme", "kind": kind, "lead_id": lead, "at": T0}
    if score is not None:
        value["score"] = score
    return orjson.dumps(value)


def test_the_roll_up_sums_maxes_and_counts_the_engaged(model: ScoringModel) -> None:
    known: dict[str, AccountState] = {}
    records = [
        Record(0, contribution("joined", "a", total=30, engagement=30)),
        Record(1, contribution("joined", "b", total=50, engagement=5)),
        Record(2, contribution("joined", "c", total=-10, engagement=-10)),
        Record(3, contribution("changed", "a", total=40, engagement=10)),
    ]
    result = fold_batch(records, known, model)
    (score,) = result.scores
    assert score.contacts == 3
    assert score.contact_total_sum == 80
    assert score.contact_total_max == 50
    assert score.engaged_contacts == 1  # engagement >= 10: a (10) only
    assert score.fit == 0
    assert score.total == 80
    assert [m.lead_id for m in score.members] == ["b", "a", "c"]
    assert (score.sequence, score.previous_total) == (1, None)
    left = fold_batch([Record(4, contribution("left", "b"))], known, model, applied_offset=3)
    assert (left.scores[0].contact_total_sum, left.scores[0].contact_total_max) == (30, 40)
    assert (left.scores[0].sequence, left.scores[0].previous_total) == (2, 80)


def test_account_fit_rules_score_the_account_traits(model: ScoringModel) -> None:
    known: dict[str, AccountState] = {}
    traits = {
        "account_id": "acme",
        "kind": "traits",
        "lead_id": "a",
        "at": T0,
        "traits": {"industry": "saas", "employees": 500, "plan": None},
    }
    result = fold_batch([Record(0, orjson.dumps(traits))], known, model)
    (score,) = result.scores
    assert score.fit == 40  # account-industry 20 + account-size 20, not account-plan
    assert [r.rule.split(":")[0] for r in score.breakdown] == ["account-industry", "account-size"]
    older = {
        **traits,
        "at": T0 - timedelta(days=1),
        "traits": {"employees": 10, "plan": "business"},
    }
    again = fold_batch([Record(1, orjson.dumps(older))], known, model, applied_offset=0)
    # both older than what the account holds: nothing changes
    assert again.scores[0].fit == 40
    assert again.scores[0].traits == {"industry": "saas", "employees": 500, "plan": None}
    newer = {**traits, "at": T0 + timedelta(days=1), "traits": {"plan": "business"}}
    last = fold_batch([Record(2, orjson.dumps(newer))], known, model, applied_offset=1)
    assert last.scores[0].fit == 50  # 20 + 20 + account-plan 10


def test_records_that_are_not_contributions_are_refused(model: ScoringModel) -> None:
    known: dict[str, AccountState] = {}
    bad = [
        Record(0, b"{"),
        Record(1, None),
        Record(2, orjson.dumps({"account_id": "acme", "kind": "joined", "lead_id": "a", "at": T0})),
        Record(3, contribution("joined", "a", total=5)),
    ]
    result = fold_batch(bad, known, model)
    assert [record.offset for record, _ in result.refused] == [0, 1, 2]
    assert "needs a score" in result.refused[2][1]
    assert known["acme"].contacts["a"].total == 5
    replayed = fold_batch(bad, known, model, applied_offset=3)
    assert (replayed.replayed, replayed.scores) == (4, [])


def test_account_states_survive_their_changelog_records(model: ScoringModel) -> None:
    known: dict[str, AccountState] = {}
    traits = {"account_id": "acme", "kind": "traits", "lead_id": "a", "at": T0, "traits": {"x": 1}}
    fold_batch(
        [Record(0, contribution("joined", "a", 12.5, 2)), Record(1, orjson.dumps(traits))],
        known,
        model,
    )
    state = known["acme"]
    assert read_account(orjson.loads(account_record(state))) == state


def test_the_accounts_section_is_checked_like_the_rest(tmp_path: Any) -> None:
    base = (
        "version: v\nengagement: {half_life_days: 1}\nfit: {rules: []}\n"
        "stages: {prospect: {fit_min: 1}, opportunity: {engagement_min: 1}}\n"
    )
    path = tmp_path / "m.yaml"
    path.write_text(base)
    assert load_model(path).accounts.membership.email_domains is False
    path.write_text(base + "accounts: {membership: {email_domain: true}}\n")
    with pytest.raises(ModelError, match=r"accounts\.membership\.email_domain"):
        load_model(path)
    rule = "{id: a, trait: t, exists: true, points: 1}"
    path.write_text(base + f"accounts: {{fit: {{rules: [{rule}, {rule}]}}}}\n")
    with pytest.raises(ModelError, match=r"accounts.fit: rules\[1\]: id 'a' is already"):
        load_model(path)


# --- both stages together -------------------------------------------------------------

LEADS = ["a@x.io", "b@x.io", "c@x.io"]
ACCOUNTS = ["acme", "initech", None]


@st.composite
def lead_batches(draw: st.DrawFn) -> list[list[Event]]:
    """Batches of events for a few leads moving between accounts, erased now and then."""
    batches, counter = [], 0
    for _ in range(draw(st.integers(1, 6))):
        batch = []
        for _ in range(draw(st.integers(1, 6))):
            counter += 1
            lead = draw(st.sampled_from(LEADS))
            choice = draw(st.integers(0, 9))
            at = T0 + timedelta(minutes=counter)
            if choice < 3:
                account = draw(st.sampled_from(ACCOUNTS))
                event = Event(
                    event_id=f"e{counter}",
                    type="lead.updated",
                    lead_id=lead,
                    occurred_at=at,
                    traits={"account_id": account},
                )
            elif choice == 3:
                event = Event(
                    event_id=f"x{counter}", type=LEAD_ERASED, lead_id=lead, occurred_at=at
                )
            else:
                kind = draw(st.sampled_from(["form.submitted", "page.viewed", "email.clicked"]))
                event = Event(event_id=f"e{counter}", type=kind, lead_id=lead, occurred_at=at)
            batch.append(event)
        batches.append(batch)
    return batches


@settings(max_examples=150, deadline=None)
@given(lead_batches(), st.data())
def test_each_account_holds_exactly_its_contacts_latest_totals(
    batches: list[list[Event]], data: st.DataObject
) -> None:
    """Whatever the batches and however the account stage's batches fall (and replays of
    contributions already folded), each account ends up with the leads whose latest
    traits name it, each with its latest total: nothing lost, nothing counted twice."""
    model = load_model()
    stages = Stages(model)
    for batch in batches:
        stages.score(batch)
        if data.draw(st.booleans()):
            stages.fold(data.draw(st.integers(0, len(stages.contributions))))
    stages.fold()
    fold_batch(  # a replay of everything already folded changes nothing
        [Record(i, v) for i, (_, v) in enumerate(stages.contributions)],
        stages.accounts,
        model,
        applied_offset=stages.folded,
    )
    expected: dict[str, dict[str, float]] = {}
    for lead_id, state in stages.leads.items():
        account = state.traits.get("account_id")
        if account is not None and account.value is not None:
            score = roll_up_total(state, model)
            expected.setdefault(str(account.value), {})[lead_id] = score
    assert stages.contacts() == expected


def roll_up_total(state: LeadState, model: ScoringModel) -> float:
    """The lead's total as its last score update said it (a no-op event at its as_of)."""
    probe = Event(
        event_id="probe", type="custom.thing", lead_id=state.lead_id, occurred_at=state.as_of or T0
    )
    outcome = apply_event(state.copy(), probe, model)
    assert outcome.score is not None
    return outcome.score.total
