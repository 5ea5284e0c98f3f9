"""Folding a batch of contribution records of one partition: pure, no I/O, no clock.

The account stage's counterpart of :mod:`services.scoring.batch`: it decodes each record,
folds it into its account's state (:func:`~services.scoring.rollup.fold`) and, once per
account the batch touched, rolls the account up into one score update. States change in
place: a caller that cannot commit the result throws ``known`` away and restores it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import ValidationError

from services.scoring.model import ScoringModel
from services.scoring.rollup import AccountState, fold, roll_up
from shared.account_events import AccountContribution, AccountScore
from shared.kafka import ConsumedRecord


@dataclass
class AccountBatchResult:
    scores: list[AccountScore] = field(default_factory=list)
    """One per account the batch touched, in the order first touched."""
    accounts: dict[str, AccountState] = field(default_factory=dict)
    """The states to write: every account the batch touched."""
    refused: list[tuple[ConsumedRecord, str]] = field(default_factory=list)
    """Records that are not contributions, with the reason: dead letters."""
    applied_offset: int = -1
    replayed: int = 0
    """Records at or below the offset already folded, ignored."""


def fold_batch(
    records: Iterable[ConsumedRecord],
    known: dict[str, AccountState],
    model: ScoringModel,
    *,
    applied_offset: int = -1,
) -> AccountBatchResult:
    """Fold ``records`` (of one partition, in offset order) into ``known``, in place."""
    result = AccountBatchResult(applied_offset=applied_offset)
    for record in records:
        if record.offset <= result.applied_offset:
            result.replayed += 1
            continue
        result.applied_offset = record.offset
        try:
            if record.value is None:
                raise ValueError("a record without a value is not a contribution")
            contribution = AccountContribution.model_validate_json(record.value)
            state = known.get(contribution.account_id) or AccountState(contribution.account_id)
            fold(state, contribution)
        except (ValidationError, ValueError, TypeError) as exc:
            result.refused.append((record, f"{type(exc).__name__}: {exc}"))
            continue
        known[contribution.account_id] = state
        result.accounts[contribution.account_id] = state
    result.scores = [roll_up(state, model) for state in result.accounts.values()]
    return result
