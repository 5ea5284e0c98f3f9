"""The account shapes pipeline serves: what ``accounts_store`` returns and the API sends."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from shared.api_models import Timestamp
from shared.events import RuleContribution, Stage


class Account(BaseModel):
    """An account's newest roll-up of its contacts (docs/architecture.md §5.10)."""

    model_config = ConfigDict(frozen=True)

    account_id: str
    name: str | None = Field(description="The account's `name` trait, when a group call gave it.")
    domain: str | None = Field(
        description="The account's `domain` (else `website`) trait, when a group call gave it."
    )
    fit: float = Field(description="Points of the model's account fit rules on its traits.")
    contacts: int = Field(description="Contacts the account counts.")
    engaged_contacts: int = Field(
        description="Contacts with engagement >= the model's accounts.engaged.engagement_min."
    )
    contact_total_sum: float
    contact_total_max: float | None = Field(description="Null while the account has no contact.")
    total: float = Field(description="fit + contact_total_sum.")
    as_of: Timestamp = Field(description="The latest event time that went into the account.")
    model_version: str
    sequence: int = Field(description="Orders the account's updates; only grows.")
    updated_at: Timestamp = Field(description="When pipeline last changed this account.")


class AccountPage(BaseModel):
    items: list[Account]
    next_cursor: str | None = Field(
        description=(
            "Score order: pass as ?cursor= for the next page, null on the last page. Change "
            "order: pass as ?updated_after=, always set."
        )
    )


class AccountContact(BaseModel):
    """A contact as its account counts it: its score when the account was last rolled up."""

    model_config = ConfigDict(frozen=True)

    lead_id: str
    stage: Stage
    fit: float
    engagement: float
    total: float
    engaged: bool


class AccountDetail(Account):
    traits: dict[str, JsonValue] = Field(description="The account's traits (group calls').")
    breakdown: list[RuleContribution] = Field(description="The account fit rules that match.")
    members: list[AccountContact] = Field(
        description="Its contacts, highest total first, ties by lead id."
    )
    members_truncated: bool = Field(
        description=(
            "True when the account has more contacts than scoring lists in one update: "
            "members then holds the highest totals only, while the counts and sums hold all."
        )
    )
