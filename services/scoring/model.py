"""The scoring model file (docs/architecture.md §2): its schema, and loading it with clear errors.

The model is operator-edited YAML, so every part refuses unknown keys (a typo
such as ``max_per_dy`` must not silently mean "no cap") and a bad file fails
at start with the rule and field that are wrong, never later while scoring.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from services.scoring.rulebook import RuleBook

DEFAULT_MODEL_PATH = Path(__file__).with_name("default_model.yaml")
"""The shipped model (docs/architecture.md §2); tests and examples rely on its numbers."""

SECONDS_PER_DAY = 86_400.0

# strict: a quoted "5" or a YAML boolean is a mistake in a model file, not a number
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Name = Annotated[str, StringConstraints(strict=True, min_length=1)]
RuleId = Annotated[str, StringConstraints(strict=True, pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
"""A rule's stable name: a short slug (``pricing-view``), unique in the model. State, caps and
breakdowns are keyed by it, so adding, removing or reordering rules never mislabels anything."""

FIT_OPERATORS = ("in", "not_in", "equals", "gte", "gt", "lte", "lt", "exists")
"""The comparison operators of a fit rule, as spelled in the file; exactly one per rule."""


class ModelError(ValueError):
    """A scoring model file that cannot be used; the message names the file, rule and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EngagementRule(_Strict):
    """Points for an event type, optionally narrowed by ``where`` and capped per UTC day."""

    id: RuleId
    event: Name
    where: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="path_prefix: prefix of properties.path; any other key: equal property.",
    )
    points: Number
    max_per_day: Annotated[int, Field(strict=True, ge=1)] | None = None

    @field_validator("where")
    @classmethod
    def _prefix_is_text(cls, where: dict[str, JsonValue]) -> dict[str, JsonValue]:
        if "path_prefix" in where and not isinstance(where["path_prefix"], str):
            raise ValueError("path_prefix must be a string")
        return where


class FitRule(_Strict):
    """Points when one trait satisfies one operator, e.g. ``{trait: employees, gte: 50}``."""

    id: RuleId
    trait: Name
    points: Number
    in_: Annotated[list[JsonValue], Field(min_length=1)] | None = Field(default=None, alias="in")
    not_in: Annotated[list[JsonValue], Field(min_length=1)] | None = None
    equals: JsonValue = None
    gte: Number | None = None
    gt: Number | None = None
    lte: Number | None = None
    lt: Number | None = None
    exists: Annotated[bool, Field(strict=True)] | None = None

    @model_validator(mode="after")
    def _exactly_one_operator(self) -> FitRule:
        given = [op for op in FIT_OPERATORS if _field_name(op) in self.model_fields_set]
        if len(given) != 1:
            raise ValueError(
                f"exactly one operator is required, got {', '.join(given) or 'none'}"
                f" (one of {', '.join(FIT_OPERATORS)})"
            )
        if self.operand is None:
            raise ValueError(f"{given[0]} must not be null (a missing trait matches exists: false)")
        return self

    @cached_property
    def operator(self) -> str:
        """The one operator of this rule, as spelled in the file (found once: every fit
        computed asks it of every rule)."""
        return next(op for op in FIT_OPERATORS if _field_name(op) in self.model_fields_set)

    @property
    def operand(self) -> JsonValue:
        """What the trait is compared with."""
        value: JsonValue = getattr(self, _field_name(self.operator))
        return value


class Engagement(_Strict):
    half_life_days: Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
    rules: list[EngagementRule] = Field(default_factory=list, description="First match wins.")

    @property
    def half_life_seconds(self) -> float:
        return self.half_life_days * SECONDS_PER_DAY


class Fit(_Strict):
    rules: list[FitRule] = Field(default_factory=list)


class ProspectStage(_Strict):
    fit_min: Number


class OpportunityStage(_Strict):
    engagement_min: Number
    intent_events: list[Name] = Field(default_factory=list)


class Stages(_Strict):
    prospect: ProspectStage
    opportunity: OpportunityStage


class AccountMembership(_Strict):
    """Where a lead's account comes from, in this order of precedence (the first that names
    one wins, docs/architecture.md §2.1): a group call, an account id trait, a company-domain
    trait, and, only with ``email_domains``, the domain of the lead's business address."""

    group_events: list[Name] = Field(
        default_factory=lambda: ["segment.group"],
        description="Event types that put their lead in the account properties.group_id"
        " names (the latest by event time wins); properties.traits are the account's traits.",
    )
    account_id_traits: list[Name] = Field(
        default_factory=lambda: ["account_id"],
        description="Lead traits holding an account id; the first one set wins.",
    )
    domain_traits: list[Name] = Field(
        default_factory=lambda: ["company_domain"],
        description="Lead traits holding the company's web domain (a URL will do); the"
        " account id is the domain, lower-cased, without scheme, port, path or www.",
    )
    email_domains: Annotated[bool, Field(strict=True)] = Field(
        default=False,
        description="Also put a lead in the account of its e-mail address's domain (the"
        " email traits, else the lead id), unless a free-mail provider's.",
    )
    email_traits: list[Name] = Field(
        default_factory=lambda: ["email"],
        description="Lead traits holding the lead's e-mail address (email_domains only).",
    )


class EngagedContacts(_Strict):
    """A contact counts as engaged while its engagement is at least ``engagement_min``."""

    engagement_min: Number = 10.0


class AccountFit(_Strict):
    rules: list[FitRule] = Field(
        default_factory=list, description="On the account's traits; every match adds."
    )

    @model_validator(mode="after")
    def _ids_are_unique(self) -> AccountFit:
        first: dict[str, int] = {}
        for index, rule in enumerate(self.rules):
            if rule.id in first:
                raise ValueError(
                    f"rules[{index}]: id {rule.id!r} is already the id of rules[{first[rule.id]}]"
                )
            first[rule.id] = index
        return self


class Accounts(_Strict):
    """Accounts roll up their contacts (sum and max of their totals, how many are engaged)
    and have a fit of their own, on the account's traits."""

    membership: AccountMembership = Field(default_factory=AccountMembership)
    engaged: EngagedContacts = Field(default_factory=EngagedContacts)
    fit: AccountFit = Field(default_factory=AccountFit)


class ScoringModel(_Strict):
    """A versioned scoring model; ``version`` is stamped on every score and stage change."""

    version: Name
    engagement: Engagement
    fit: Fit
    stages: Stages
    accounts: Accounts = Field(default_factory=Accounts)
    _rulebook: RuleBook = PrivateAttr()

    @model_validator(mode="after")
    def _ids_are_unique(self) -> ScoringModel:
        """One id names one rule across both axes, so a breakdown label is never ambiguous."""
        first: dict[str, str] = {}
        places = [(f"engagement.rules[{i}]", r.id) for i, r in enumerate(self.engagement.rules)]
        places += [(f"fit.rules[{i}]", r.id) for i, r in enumerate(self.fit.rules)]
        for place, rule_id in places:
            if rule_id in first:
                raise ValueError(f"{place}: id {rule_id!r} is already the id of {first[rule_id]}")
            first[rule_id] = place
        return self

    def model_post_init(self, context: Any, /) -> None:
        self._rulebook = RuleBook.of(self)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with a rulebook of its own: an ``update`` changes what the rules are."""
        copied = super().model_copy(update=update, deep=deep)
        copied._rulebook = RuleBook.of(copied)
        return copied

    @property
    def rulebook(self) -> RuleBook:
        """What scoring needs per event, built once when the model is loaded.

        Read straight from pydantic's private storage: ``self._rulebook`` goes through
        pydantic's ``__getattr__``, which cost a quarter of the scoring of an event."""
        book: RuleBook = self.__pydantic_private__["_rulebook"]  # type: ignore[index]
        return book


def load_model(path: Path | None = None) -> ScoringModel:
    """Read and validate a model file; ``None`` means the shipped default.

    Raises :class:`ModelError` naming the file and, per problem, the rule and
    field (``fit.rules[2]: exactly one operator is required, got none``).
    """
    path = path or DEFAULT_MODEL_PATH
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"scoring model {path}: cannot be read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ModelError(f"scoring model {path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"scoring model {path}: must be a mapping, got {type(data).__name__}")
    try:
        return ScoringModel.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise ModelError(f"scoring model {path}: {problems}") from None


def _field_name(operator: str) -> str:
    return "in_" if operator == "in" else operator


def _describe(error: ErrorDetails) -> str:
    """``fit.rules[2].gte: Input should be a valid number`` from one pydantic error."""
    where = ""
    for part in error["loc"]:
        where += f"[{part}]" if isinstance(part, int) else f".{part}" if where else str(part)
    reason = error["msg"]
    if error["type"] == "value_error" and "ctx" in error:  # ours: drop pydantic's "Value error, "
        reason = str(error["ctx"]["error"])
        if not where:  # a check of the whole model names its rules itself
            return reason
    return f"{where or 'model'}: {reason}"
