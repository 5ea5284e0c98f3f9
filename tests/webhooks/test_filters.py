from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.webhooks.filters import Filters, wants_account_score, wants_score, wants_stage
from shared.events import Stage


def test_stage_filter_keeps_only_moves_into_the_listed_stages() -> None:
    only = Filters(to_stages=[Stage.OPPORTUNITY, Stage.CUSTOMER])
    assert wants_stage(only, Stage.CUSTOMER)
    assert not wants_stage(only, Stage.PROSPECT)
    assert wants_stage(Filters(), Stage.PROSPECT)


def test_without_score_filters_every_update_goes_out() -> None:
    assert wants_score(Filters(), 10, 11, 10)


@pytest.mark.parametrize(
    ("previous", "total", "wanted"),
    [
        (40, 49, False),
        (49, 50, True),
        (50, 55, False),
        (55, 45, True),
        (None, 60, True),
        (None, 10, False),
    ],
)
def test_a_threshold_is_sent_when_crossed_either_way(
    previous: float | None, total: float, wanted: bool
) -> None:
    assert wants_score(Filters(score_thresholds=[50]), previous, total, None) is wanted


def test_min_delta_compares_with_the_last_total_sent_not_the_previous_update() -> None:
    filters = Filters(score_min_delta=10)
    assert not wants_score(filters, 19, 20, 12)  # eight points since the last one sent
    assert wants_score(filters, 21, 22, 12)
    assert wants_score(filters, None, 10, None)


def test_unknown_or_bad_filters_are_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="to_stage"):
        Filters.model_validate({"to_stage": ["customer"]})
    with pytest.raises(ValidationError, match="score_min_delta"):
        Filters.model_validate({"score_min_delta": -1})
    with pytest.raises(ValidationError, match="to_stages"):
        Filters.model_validate({"to_stages": ["won"]})


def test_account_filters_apply_to_the_accounts_total_and_leave_lead_scores_alone() -> None:
    filters = Filters(account_score_thresholds=[100], account_score_min_delta=25)
    assert wants_account_score(filters, 90, 105, None)  # crosses 100
    assert not wants_account_score(filters, 105, 120, 105)  # 15 since the last one sent
    assert wants_account_score(filters, 120, 130, 105)  # 25 since the last one sent
    assert wants_account_score(filters, None, 25, None)  # from nothing
    assert wants_score(filters, 10, 11, 10)  # no lead filter: every lead update
    assert wants_account_score(Filters(score_thresholds=[50]), 10, 11, 10)
    with pytest.raises(ValidationError, match="account_score_min_delta"):
        Filters.model_validate({"account_score_min_delta": 0})
