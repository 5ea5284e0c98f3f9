"""The shapes of the webhooks API: endpoints, messages and attempts, and the payloads.

Requests forbid unknown fields, so a misspelt filter is a 422 naming it rather
than a subscription that silently receives everything.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, JsonValue

from services.webhooks.filters import Filters
from services.webhooks.payloads import EventType
from shared.api_models import Timestamp

Subscribable = Literal[
    "lead.stage_changed", "lead.score_changed", "lead.created", "account.score_changed"
]
STAGE_CHANGED: Subscribable = "lead.stage_changed"
Url = Annotated[AnyHttpUrl, Field(description="Where to POST; https unless http is allowed.")]
Description = Annotated[str, Field(max_length=1024)]
Concurrency = Annotated[int, Field(ge=1, le=100, description="Deliveries in flight at once.")]
RateLimit = Annotated[
    float, Field(gt=0, le=10_000, allow_inf_nan=False, description="Deliveries per second.")
]
EventTypes = Annotated[
    list[Subscribable],
    Field(min_length=1, description="The event types this endpoint receives."),
]


class EndpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url
    description: Description = ""
    event_types: EventTypes = Field(default_factory=lambda: [STAGE_CHANGED])
    filters: Filters = Field(default_factory=Filters)
    rate_limit: RateLimit | None = None
    concurrency: Concurrency | None = None


class EndpointPatch(BaseModel):
    """Only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    url: Url | None = None
    description: Description | None = None
    event_types: EventTypes | None = None
    filters: Filters | None = None
    rate_limit: RateLimit | None = None
    concurrency: Concurrency | None = None


class Endpoint(BaseModel):
    endpoint_id: str
    url: str
    description: str
    event_types: list[str]
    filters: Filters
    rate_limit: float | None
    concurrency: int
    enabled: bool
    disabled_reason: str | None
    previous_secret_until: Timestamp | None = Field(
        description="Until when the secret before the last rotation still signs."
    )
    created_at: Timestamp
    updated_at: Timestamp


class EndpointWithSecret(Endpoint):
    secret: str = Field(description="The signing secret: shown this once, store it now.")


class EndpointList(BaseModel):
    items: list[Endpoint]


class Attempt(BaseModel):
    attempted_at: Timestamp
    outcome: str = Field(description="success, failure, timeout or refused (by the URL policy).")
    response_code: int | None
    latency_ms: float
    error: str | None


class Message(BaseModel):
    message_id: int
    webhook_id: str
    event_type: str
    lead_id: str | None
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: Timestamp | None
    created_at: Timestamp
    last_attempt_at: Timestamp | None
    delivered_at: Timestamp | None


class MessageDetail(Message):
    payload: JsonValue
    attempt_log: list[Attempt]


class MessagePage(BaseModel):
    items: list[Message]
    next_after: int = Field(description="Pass as after= for the next page.")


class Replayed(BaseModel):
    replayed: int = Field(description="Messages made pending again, due now.")


class ReplaySince(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: Timestamp = Field(description="Every message created at or after this time.")


class PingSent(BaseModel):
    webhook_id: str
    outcome: str
    response_code: int | None
    latency_ms: float
    error: str | None


class StageChangedData(BaseModel):
    change_id: str
    lead_id: str
    sequence: int = Field(description="Orders a lead's stage changes.")
    from_stage: str | None
    to_stage: str
    reason: str
    trigger_event_id: str
    occurred_at: str
    score: dict[str, float]
    model_version: str


class ScoreChangedData(BaseModel):
    lead_id: str
    sequence: int = Field(description="Orders a lead's score updates.")
    fit: float
    engagement: float
    total: float
    previous_total: float | None
    delta: float | None
    stage: str
    as_of: str
    trigger_event_id: str
    model_version: str
    breakdown: list[dict[str, JsonValue]]
    breakdown_truncated: bool = Field(description="True when cut to keep the body under 20 KB.")


class CreatedData(BaseModel):
    lead_id: str
    sequence: int
    stage: str
    fit: float
    engagement: float
    total: float
    as_of: str
    trigger_event_id: str
    model_version: str


class AccountScoreChangedData(BaseModel):
    account_id: str
    sequence: int = Field(description="Orders an account's score updates.")
    total: float = Field(description="The account's fit plus the sum of its contacts' totals.")
    previous_total: float | None = Field(description="The total of the previous update.")
    delta: float | None
    fit: float = Field(description="The account fit rules' points, on the account's traits.")
    contacts: int
    engaged_contacts: int
    contact_total_sum: float
    contact_total_max: float | None = Field(description="null while the account has no contact.")
    as_of: str = Field(description="The latest event time that went into the account.")
    model_version: str
    breakdown: list[dict[str, JsonValue]] = Field(description="The account fit rules that match.")
    breakdown_truncated: bool = Field(description="True when cut to keep the body under 20 KB.")
    traits: dict[str, JsonValue] = Field(description="The account's traits (group calls).")
    traits_truncated: bool = Field(
        description="True when the biggest traits were left out to keep the body under 20 KB."
    )


class StageChangedWebhook(BaseModel):
    type: Literal["lead.stage_changed"]
    timestamp: str
    data: StageChangedData


class ScoreChangedWebhook(BaseModel):
    type: Literal["lead.score_changed"]
    timestamp: str
    data: ScoreChangedData


class CreatedWebhook(BaseModel):
    type: Literal["lead.created"]
    timestamp: str
    data: CreatedData


class AccountScoreChangedWebhook(BaseModel):
    """The contacts are counted, not listed (the pipeline's GET /v1/accounts/{id} lists
    them): an account's webhook names no lead."""

    type: Literal["account.score_changed"]
    timestamp: str
    data: AccountScoreChangedData


WEBHOOK_BODIES: dict[EventType, type[BaseModel]] = {
    EventType.STAGE_CHANGED: StageChangedWebhook,
    EventType.SCORE_CHANGED: ScoreChangedWebhook,
    EventType.CREATED: CreatedWebhook,
    EventType.ACCOUNT_SCORE_CHANGED: AccountScoreChangedWebhook,
}
