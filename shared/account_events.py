"""What flows through the account topics (docs/architecture.md §3.1, §4.2).

- :class:`AccountContribution` is internal, on ``leadflow.account-contributions`` keyed by
  account id: the lead stage of scoring tells the account stage what one lead now adds to
  one account (it joined, its score changed, it left), or which traits a group call gave
  the account. Each says what *is*, never a difference, so folding one twice changes
  nothing and a contact is in an account at most once.
- :class:`AccountScore` is published on the compacted ``leadflow.account-scores``, keyed
  by account id: the account's roll-up after the contributions of one batch.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from shared.events import Identifier, RuleContribution, Stage, UtcTime


class ContributionKind(StrEnum):
    JOINED = "joined"
    """The lead now belongs to the account, with this score."""
    CHANGED = "changed"
    """The lead still belongs to the account; its score is now this."""
    LEFT = "left"
    """The lead no longer belongs to the account (it moved, lost its traits, was erased)."""
    TRAITS = "traits"
    """A group call of the lead gave the account these traits (latest event time wins)."""


class ContactScore(BaseModel):
    """A contact's score as it counts in its account."""

    model_config = ConfigDict(frozen=True)

    fit: float
    engagement: float
    total: float
    stage: Stage


class AccountContribution(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    account_id: Identifier
    kind: ContributionKind
    lead_id: Identifier
    at: UtcTime = Field(description="The event time it reflects: the lead's as_of, the call's.")
    score: ContactScore | None = Field(default=None, description="joined and changed only.")
    traits: dict[str, JsonValue] = Field(default_factory=dict, description="traits only.")

    @model_validator(mode="after")
    def _scored_when_counted(self) -> AccountContribution:
        counted = self.kind in (ContributionKind.JOINED, ContributionKind.CHANGED)
        if counted != (self.score is not None):
            raise ValueError(
                f"a {self.kind.value} contribution {'needs' if counted else 'has no'} a score"
            )
        return self


class AccountMember(BaseModel):
    model_config = ConfigDict(frozen=True)

    lead_id: str
    fit: float
    engagement: float
    total: float
    stage: Stage
    engaged: bool


class AccountScore(BaseModel):
    """An account's roll-up; ``sequence`` orders the updates of one account.

    ``total`` is the account's own fit plus the sum of its contacts' totals; each contact
    counts with its latest total (valued at its own latest event, as a lead's score is).
    """

    model_config = ConfigDict(frozen=True)

    account_id: str
    sequence: int
    fit: float
    contacts: int
    engaged_contacts: int
    contact_total_sum: float
    contact_total_max: float | None = Field(description="null while the account has no contact.")
    total: float
    previous_total: float | None = Field(description="The total of the previous update.")
    as_of: UtcTime = Field(description="The latest event time that went into the account.")
    model_version: str
    breakdown: list[RuleContribution] = Field(description="The account fit rules that match.")
    traits: dict[str, JsonValue]
    members: list[AccountMember] = Field(description="Highest total first, at most a cap.")
    members_truncated: bool = False
