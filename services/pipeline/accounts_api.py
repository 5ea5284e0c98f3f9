"""The account routes: ``GET /v1/accounts`` (score order or change order) and
``GET /v1/accounts/{account_id}`` with its contacts. Reads only; the consumer writes the
accounts (:mod:`services.pipeline.accounts_store`).

Cursors have the leads' formats (:func:`services.pipeline.store.encode_cursor`,
:func:`~services.pipeline.store.encode_change_cursor`), so both listings page alike.
"""

# No ``from __future__ import annotations``: the routes' parameter types are built inside
# install_accounts, and FastAPI can only resolve string annotations from globals.
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, status
from pydantic import AfterValidator
from sqlalchemy.ext.asyncio import AsyncSession

from services.pipeline import accounts_store, store
from services.pipeline.accounts_models import AccountDetail, AccountPage
from services.pipeline.listing_params import (
    SCORE_ORDER_CURSOR,
    page_limit,
    refuse_cursor_beside_updated_after,
    updated_after_query,
)
from services.pipeline.settings import PipelineSettings
from shared.api_models import Problem
from shared.errors import invalid_query
from shared.events import NO_CONTROL_CHARS_PATTERN, no_control_chars

ACCOUNT_LISTING_MODES = """\
Two orders, one route, as `GET /v1/leads`:

- **Score order** (no `updated_after`): accounts by total, highest first, ties by
  account id; page with `cursor`.
- **Change order** (`updated_after`): the accounts whose roll-up was written since the
  cursor, in the order written, ties by account id. Start with `updated_after=0`, then
  pass each page's `next_cursor` as the next `updated_after` until a page comes back
  empty; an empty page returns the cursor it was given. An account written again comes
  back with its newer roll-up. `cursor` cannot be combined with it (422).

`min_score` filters both orders on the account's total now.
"""

AccountId = Annotated[
    str,
    AfterValidator(no_control_chars),
    Path(
        description=(
            "The account's id: a group call's group id, an account id trait, or a company "
            "domain. Percent-encode `?`, `#`, `%` and spaces. Control characters are refused."
        ),
        max_length=256,
        json_schema_extra={"pattern": NO_CONTROL_CHARS_PATTERN},
        openapi_examples={
            "domain": {"summary": "A company domain", "value": "acme.com"},
            "group": {"summary": "A group id", "value": "acme-1"},
        },
    ),
]

_UNKNOWN_ACCOUNT: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "Unknown account"}
}


def install_accounts(
    app: FastAPI,
    settings: PipelineSettings,
    get_session: Callable[..., AsyncIterator[AsyncSession]],
    *,
    dependencies: Sequence[Any],
) -> None:
    Session = Annotated[AsyncSession, Depends(get_session)]
    Limit = Annotated[int, page_limit(settings)]

    @app.get(
        "/v1/accounts",
        summary="Accounts by total score, highest first; or, with updated_after, in change order",
        description=ACCOUNT_LISTING_MODES,
        tags=["accounts"],
        dependencies=list(dependencies),
    )
    async def list_accounts(
        session: Session,
        min_score: Annotated[
            float | None,
            Query(allow_inf_nan=False, description="Only accounts with total >= this."),
        ] = None,
        limit: Limit = settings.page_size_default,
        cursor: Annotated[str | None, SCORE_ORDER_CURSOR] = None,
        updated_after: Annotated[
            str | None,
            updated_after_query("account", "accounts whose roll-up was written"),
        ] = None,
    ) -> AccountPage:
        if updated_after is not None:
            refuse_cursor_beside_updated_after(cursor)
            return await _changed(session, updated_after, min_score, limit)
        try:
            after = None if cursor is None else store.decode_cursor(cursor)
        except store.InvalidCursor as exc:
            raise invalid_query("cursor", cursor, f"cursor {exc}; start again without it") from exc
        items, last = await accounts_store.list_accounts(
            session, min_score=min_score, limit=limit, cursor=after
        )
        return AccountPage(
            items=items, next_cursor=None if last is None else store.encode_cursor(*last)
        )

    @app.get(
        "/v1/accounts/{account_id:path}",
        summary="The account's roll-up, traits and contacts",
        responses=_UNKNOWN_ACCOUNT,
        tags=["accounts"],
        dependencies=list(dependencies),
    )
    async def get_account(account_id: AccountId, session: Session) -> AccountDetail:
        found = await accounts_store.get_account(session, account_id)
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"account {account_id!r} is unknown")
        return found


async def _changed(
    session: AsyncSession, updated_after: str, min_score: float | None, limit: int
) -> AccountPage:
    try:
        after = (
            None
            if updated_after == store.START_OF_CHANGES
            else store.decode_change_cursor(updated_after)
        )
    except store.InvalidCursor as exc:
        raise invalid_query(
            "updated_after", updated_after, f"updated_after {exc}; pass 0 to sync from the start"
        ) from exc
    items, last = await accounts_store.changed_accounts(
        session, after=after, min_score=min_score, limit=limit
    )
    return AccountPage(
        items=items,
        next_cursor=updated_after if last is None else store.encode_change_cursor(*last),
    )
