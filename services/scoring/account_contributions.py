"""What a scored batch tells the accounts: the lead stage's half of the roll-up (docs §5.10).

Pure, no I/O. After a batch of one input partition is scored, each lead it scored is
placed in its account (:func:`~services.scoring.membership.resolve_account`) and compared
with its :class:`~services.scoring.membership.Membership`, the account it was counted in
and the score it was counted with:

- in no account before, in one now: ``joined`` that account, with its score;
- in another account now: ``left`` the old one, then ``joined`` the new one;
- same account, another score: ``changed``;
- in none now: ``left``; an erased lead likewise leaves its account, and so does an
  anonymous lead merged into a known one (the known lead joins with its own score).

Group calls add a ``traits`` contribution for the account they name. Each contribution
is keyed by account id; the worker writes them, and the memberships' changelog records,
in the same transaction as the batch's other outputs and state, so what an account holds
and what its leads remember of it never disagree, whatever is killed when.

Contributions state what is (a contact's whole score), never a difference: the account
stage sets or removes the contact, so one is never counted twice. A lead's records for
one account come from its own partition's producer, in order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime

import orjson
from pydantic import JsonValue

from services.scoring.batch import BatchResult
from services.scoring.lead import micros
from services.scoring.membership import (
    GroupCall,
    Membership,
    account_id_of,
    membership_key,
    membership_record,
    resolve_account,
)
from services.scoring.model import ScoringModel
from services.scoring.scoring import NewScore
from shared.account_events import ContactScore, ContributionKind
from shared.events import format_time

NO_MEMBERSHIP = Membership()


@dataclass
class AccountOutputs:
    contributions: list[tuple[bytes, bytes]] = field(default_factory=list)
    """``(account id, contribution)`` records, in the order they happened."""
    changelog: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    """Membership records of the changelog partition; ``None`` values are tombstones."""

    def add(
        self,
        kind: ContributionKind,
        account_id: str,
        lead_id: str,
        at: datetime,
        *,
        score: ContactScore | None = None,
        traits: dict[str, JsonValue] | None = None,
    ) -> None:
        self.contributions.append(
            (account_id.encode(), encode_contribution(kind, account_id, lead_id, at, score, traits))
        )


def encode_contribution(
    kind: ContributionKind,
    account_id: str,
    lead_id: str,
    at: datetime,
    score: ContactScore | None = None,
    traits: dict[str, JsonValue] | None = None,
) -> bytes:
    """The bytes :class:`~shared.account_events.AccountContribution` reads, built as a dict
    (one per scored lead per batch: a pydantic model each would cost more than the rest)."""
    value: dict[str, object] = {
        "account_id": account_id,
        "kind": kind.value,
        "lead_id": lead_id,
        "at": format_time(at),
    }
    if score is not None:
        value["score"] = {
            "fit": score.fit,
            "engagement": score.engagement,
            "total": score.total,
            "stage": score.stage.value,
        }
    if traits:
        value["traits"] = traits
    return orjson.dumps(value)


def contribute(
    result: BatchResult,
    memberships: dict[str, Membership],
    model: ScoringModel,
    free_mail: frozenset[str],
) -> AccountOutputs:
    """The batch's contributions and membership records; ``memberships`` changes in place
    (like the lead states: a caller that cannot commit them throws the partition away)."""
    out = AccountOutputs()
    stored = set()  # leads whose membership record exists before this batch
    touched: dict[str, None] = {}  # in order: the changelog's records are deterministic
    # first: what the batch scores afterwards is a new lead (or, merged, the known one)
    for event in [*result.erased, *result.retired]:
        lead_id = event.lead_id
        old = memberships.pop(lead_id, None)
        if old is None:
            continue
        if old.account_id is not None:
            out.add(ContributionKind.LEFT, old.account_id, lead_id, event.occurred_at)
        out.changelog.append((membership_key(lead_id), None))
    for event in result.group_calls:
        group_id = account_id_of(event.properties.get("group_id"))
        if group_id is None:
            continue
        lead_id = event.lead_id
        current = memberships.get(lead_id)
        if current is not None:
            stored.add(lead_id)
        current = current or NO_MEMBERSHIP
        call = GroupCall(group_id, micros(event.occurred_at))
        if current.group is None or call.at_us >= current.group.at_us:
            memberships[lead_id] = dataclasses.replace(current, group=call)
            touched[lead_id] = None
        traits = event.properties.get("traits")
        if isinstance(traits, dict) and traits:
            out.add(ContributionKind.TRAITS, group_id, lead_id, event.occurred_at, traits=traits)
    rules = model.accounts.membership
    for lead_id, score in _latest_scores(result).items():
        state = result.leads.get(lead_id)
        if state is None:
            continue
        current = memberships.get(lead_id)
        if current is not None and lead_id not in touched:
            stored.add(lead_id)
        current = current or NO_MEMBERSHIP
        account = resolve_account(lead_id, state.trait_values(), current.group, rules, free_mail)
        contact = ContactScore(
            fit=score.fit, engagement=score.engagement, total=score.total, stage=score.stage
        )
        counted_in = current.account_id
        if account == counted_in and (account is None or contact == current.reported):
            continue
        if counted_in is not None and account != counted_in:
            out.add(ContributionKind.LEFT, counted_in, lead_id, score.as_of)
        if account is not None:
            same = account == counted_in
            kind = ContributionKind.CHANGED if same else ContributionKind.JOINED
            out.add(kind, account, lead_id, score.as_of, score=contact)
        memberships[lead_id] = Membership(
            current.group, account, contact if account is not None else None
        )
        touched[lead_id] = None
    for lead_id in touched:
        membership = memberships[lead_id]
        if membership.empty:
            del memberships[lead_id]
            if lead_id in stored:
                out.changelog.append((membership_key(lead_id), None))
        else:
            out.changelog.append((membership_key(lead_id), membership_record(membership)))
    return out


def _latest_scores(result: BatchResult) -> dict[str, NewScore]:
    """Each scored lead's last score of the batch: the one its state now gives."""
    return {scored.lead_id: scored.score for scored in result.scored}
