"""An account's state and its roll-up: pure arithmetic, no I/O (docs/architecture.md §2.1).

An account holds each contact's latest score, set by ``joined``/``changed`` and removed by
``left`` contributions, and its traits (latest event time wins per trait, as a lead's).
Its score is worked out from that whole state every time, never kept as running sums:

- ``contact_total_sum`` and ``contact_total_max`` of the contacts' totals;
- ``engaged_contacts``: contacts whose engagement is at least
  ``accounts.engaged.engagement_min``;
- ``fit``: the points of the ``accounts.fit`` rules the account's traits match (the
  operators and matching of lead fit rules);
- ``total`` = ``fit`` + ``contact_total_sum``.

So a contribution folded twice, or a contact moved back and forth, can never leave a
trace: the roll-up is a function of the contacts the account holds now.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import JsonValue

from services.scoring.lead import Trait, from_micros, micros
from services.scoring.model import AccountFit, ScoringModel
from services.scoring.rules import fit_label, fit_rule_matches
from shared.account_events import (
    AccountContribution,
    AccountMember,
    AccountScore,
    ContactScore,
    ContributionKind,
)
from shared.events import RuleContribution

MAX_LISTED_MEMBERS = 1000
"""Members listed in one account score update (the highest totals): the roll-up counts
every contact, the list keeps the record well below Kafka's default message size."""


@dataclass
class AccountState:
    account_id: str
    contacts: dict[str, ContactScore] = field(default_factory=dict)
    traits: dict[str, Trait] = field(default_factory=dict)
    as_of_us: int | None = None
    """The latest event time of any contribution folded."""
    sequence: int = 0
    """Score updates published so far; the sequence of the latest."""
    published_total: float | None = None
    """The total of the latest update published."""


def fold(state: AccountState, contribution: AccountContribution) -> None:
    """Apply one contribution to its account's state, in place."""
    kind, score = contribution.kind, contribution.score
    if kind in (ContributionKind.JOINED, ContributionKind.CHANGED) and score is None:
        raise ValueError(f"a {kind.value} contribution needs a score")
    at_us = micros(contribution.at)
    if state.as_of_us is None or at_us > state.as_of_us:
        state.as_of_us = at_us
    if kind is ContributionKind.LEFT:
        state.contacts.pop(contribution.lead_id, None)
    elif kind is ContributionKind.TRAITS:
        merge_traits(state.traits, contribution.traits, at_us)
    elif score is not None:
        state.contacts[contribution.lead_id] = score


def merge_traits(traits: dict[str, Trait], given: Mapping[str, JsonValue], at_us: int) -> None:
    """Latest event time wins per trait; on a tie, the later folded."""
    for name, value in given.items():
        current = traits.get(name)
        if current is None or at_us >= current.set_at_us:
            traits[name] = Trait(value, at_us)


def account_fit(rules: AccountFit, traits: Mapping[str, JsonValue]) -> list[RuleContribution]:
    """One contribution per matching account fit rule, in model order."""
    return [
        RuleContribution(rule=fit_label(rule), axis="fit", points=float(rule.points), count=1)
        for rule in rules.rules
        if fit_rule_matches(rule, traits)
    ]


def roll_up(state: AccountState, model: ScoringModel) -> AccountScore:
    """The account's next score update: its sequence and previous total move on."""
    engaged_min = model.accounts.engaged.engagement_min
    traits = {name: trait.value for name, trait in state.traits.items()}
    breakdown = account_fit(model.accounts.fit, traits)
    fit = sum(rule.points for rule in breakdown)
    totals = [contact.total for contact in state.contacts.values()]
    contact_sum = sum(totals)
    members = sorted(
        (
            AccountMember(
                lead_id=lead_id,
                fit=contact.fit,
                engagement=contact.engagement,
                total=contact.total,
                stage=contact.stage,
                engaged=contact.engagement >= engaged_min,
            )
            for lead_id, contact in state.contacts.items()
        ),
        key=lambda member: (-member.total, member.lead_id),
    )
    total = fit + contact_sum
    state.sequence += 1
    previous, state.published_total = state.published_total, total
    return AccountScore(
        account_id=state.account_id,
        sequence=state.sequence,
        fit=fit,
        contacts=len(members),
        engaged_contacts=sum(1 for member in members if member.engaged),
        contact_total_sum=contact_sum,
        contact_total_max=max(totals) if totals else None,
        total=total,
        previous_total=previous,
        as_of=from_micros(state.as_of_us or 0),
        model_version=model.version,
        breakdown=breakdown,
        traits=traits,
        members=members[:MAX_LISTED_MEMBERS],
        members_truncated=len(members) > MAX_LISTED_MEMBERS,
    )
