"""The accounts' part of the store, on SQLite and PostgreSQL alike: idempotent writes on
``(account_id, sequence)``, one account per contact in every arrival order, exact reads."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.pipeline import accounts_store, store
from services.pipeline.accounts_models import AccountDetail
from shared.account_events import AccountScore
from shared.erasure_signals import ErasureSignal
from shared.events import Stage
from tests.pipeline.records import account_score, score_update, snapshot

Sessions = async_sessionmaker[AsyncSession]


async def record(sessions: Sessions, *scores: AccountScore) -> None:
    await store.record_batch(sessions, [], [], account_scores=scores)


async def account(sessions: Sessions, account_id: str) -> AccountDetail:
    async with sessions() as session:
        found = await accounts_store.get_account(session, account_id)
    assert found is not None, account_id
    return found


async def members(sessions: Sessions, account_id: str) -> list[str]:
    return [member.lead_id for member in (await account(sessions, account_id)).members]


async def test_an_account_is_recorded_with_its_roll_up_traits_and_contacts(
    sessions: Sessions,
) -> None:
    traits = {"name": "Acme Inc.", "website": "https://acme.com", "plan": "enterprise"}
    score = account_score("acme", 3, {"ada": 60.0, "bob": 30.0, "cyd": 60.0}, fit=10, traits=traits)
    await record(sessions, score)

    found = await account(sessions, "acme")
    assert (found.name, found.domain) == ("Acme Inc.", "https://acme.com")
    assert (found.contacts, found.engaged_contacts) == (3, 3)
    assert (found.contact_total_sum, found.contact_total_max, found.fit) == (150, 60, 10)
    assert (found.total, found.sequence, found.model_version) == (160, 3, "default-1")
    assert found.as_of == score.as_of
    assert found.traits == traits
    assert found.breakdown == score.breakdown
    assert [(m.lead_id, m.total, m.stage) for m in found.members] == [
        ("ada", 60.0, Stage.PROSPECT),
        ("cyd", 60.0, Stage.PROSPECT),
        ("bob", 30.0, Stage.LEAD),
    ]
    assert found.members_truncated is False


async def test_an_unknown_account_is_none(sessions: Sessions) -> None:
    async with sessions() as session:
        assert await accounts_store.get_account(session, "nobody.com") is None


async def test_redelivered_and_older_account_scores_change_nothing(sessions: Sessions) -> None:
    newest = account_score("acme", 5, {"ada": 40.0, "bob": 20.0})
    await record(sessions, newest)
    before = await snapshot(sessions)
    assert len(before["account_contacts"]) == 2

    await record(sessions, newest)
    await record(sessions, account_score("acme", 4, {"cyd": 99.0}))
    await record(sessions, account_score("acme", 5, {"cyd": 99.0}))  # same sequence: not newer

    assert await snapshot(sessions) == before


async def test_the_newest_of_one_batch_wins_whatever_its_place(sessions: Sessions) -> None:
    await record(
        sessions,
        account_score("acme", 2, {"ada": 40.0}),
        account_score("acme", 3, {"bob": 20.0}),
        account_score("acme", 1, {"cyd": 10.0}),
    )
    found = await account(sessions, "acme")
    assert (found.sequence, [m.lead_id for m in found.members]) == (3, ["bob"])


async def test_contacts_that_left_are_removed_and_scores_follow(sessions: Sessions) -> None:
    await record(sessions, account_score("acme", 1, {"ada": 40.0, "bob": 20.0}))
    await record(sessions, account_score("acme", 2, {"bob": 70.0, "cyd": 5.0}))

    found = await account(sessions, "acme")
    assert [(m.lead_id, m.total) for m in found.members] == [("bob", 70.0), ("cyd", 5.0)]
    assert found.contact_total_sum == 75.0

    await record(sessions, account_score("acme", 3, {}))
    empty = await account(sessions, "acme")
    assert (empty.members, empty.contacts, empty.contact_total_max) == ([], 0, None)


MOVE = {
    "acme joins": account_score("acme", 1, {"ada": 40.0, "bob": 10.0}),
    "acme leaves": account_score("acme", 2, {"bob": 10.0}),
    "initech joins": account_score("initech", 1, {"ada": 40.0}),
}
"""ada moves from acme to initech: acme's two records and initech's one."""


@pytest.mark.parametrize("order", list(itertools.permutations(MOVE)), ids=" then ".join)
async def test_a_moved_contact_is_under_one_account_in_every_arrival_order(
    sessions: Sessions, order: tuple[str, ...]
) -> None:
    for name in order:
        await record(sessions, MOVE[name])
        holding = [a for a in ("acme", "initech") if await _known(sessions, a)]
        listing_ada = [a for a in holding if "ada" in await members(sessions, a)]
        assert len(listing_ada) <= 1, (name, listing_ada)
        seen = set(order[: order.index(name) + 1])
        # once any record that still lists ada has been applied, she is somewhere
        if seen & {"initech joins"} or seen == {"acme joins"}:
            assert len(listing_ada) == 1, (name, listing_ada)

    assert await members(sessions, "acme") == ["bob"]
    assert await members(sessions, "initech") == ["ada"]


async def _known(sessions: Sessions, account_id: str) -> bool:
    async with sessions() as session:
        return await accounts_store.get_account(session, account_id) is not None


async def test_a_contact_moved_back_is_listed_where_it_was_claimed_last(
    sessions: Sessions,
) -> None:
    # acme's record without ada never arrives before she is back: initech's claim is the
    # newest until initech lets her go
    await record(sessions, account_score("acme", 1, {"ada": 40.0}))
    await record(sessions, account_score("initech", 1, {"ada": 40.0}))
    assert (await members(sessions, "acme"), await members(sessions, "initech")) == ([], ["ada"])
    await record(sessions, account_score("acme", 2, {"ada": 45.0}))
    assert await members(sessions, "initech") == ["ada"]
    await record(sessions, account_score("initech", 2, {}))
    assert (await members(sessions, "acme"), await members(sessions, "initech")) == (["ada"], [])


async def test_an_erased_lead_leaves_every_account_table(sessions: Sessions) -> None:
    await store.record_batch(
        sessions,
        [],
        [score_update("ada", 1, 40.0)],
        account_scores=[account_score("acme", 1, {"ada": 40.0, "bob": 10.0})],
    )
    await store.record_batch(sessions, [], [], [ErasureSignal("ada", "scores", "e-1")])

    async with sessions() as session:
        rows = (
            await session.execute(text("SELECT lead_id FROM account_contacts ORDER BY lead_id"))
        ).all()
    assert [row.lead_id for row in rows] == ["bob"]


async def test_non_finite_account_scores_are_refused_before_any_write(sessions: Sessions) -> None:
    bad = account_score("acme", 1, {"ada": 40.0}).model_copy(update={"total": float("nan")})
    with pytest.raises(ValueError, match="not finite"):
        await record(sessions, bad)
    async with sessions() as session:
        assert await accounts_store.get_account(session, "acme") is None


async def test_accounts_list_by_total_with_a_keyset_cursor(sessions: Sessions) -> None:
    totals = {"a": 5.0, "b": 80.0, "c": 80.0, "d": 42.0, "e": -3.0, "f": 80.0}
    await record(sessions, *(account_score(i, 1, {f"{i}-lead": t}) for i, t in totals.items()))
    seen: list[tuple[float, str]] = []
    cursor = None
    while True:
        async with sessions() as session:
            items, cursor = await accounts_store.list_accounts(session, limit=2, cursor=cursor)
        seen += [(item.total, item.account_id) for item in items]
        if cursor is None:
            break
    assert seen == sorted(((t, i) for i, t in totals.items()), key=lambda k: (-k[0], k[1]))

    async with sessions() as session:
        high, last = await accounts_store.list_accounts(session, min_score=42)
    assert ([item.account_id for item in high], last) == (["b", "c", "f", "d"], None)


async def test_changed_accounts_come_in_write_order_and_a_rewrite_moves_past(
    sessions: Sessions,
) -> None:
    await record(sessions, account_score("b", 1, {"x": 1.0}), account_score("a", 1, {"y": 1.0}))
    await record(sessions, account_score("c", 1, {"z": 1.0}))
    async with sessions() as session:
        first, after = await accounts_store.changed_accounts(session, after=None, limit=2)
    assert [item.account_id for item in first] == ["a", "b"]

    await record(sessions, account_score("a", 2, {"y": 2.0}))  # written again: listed again
    async with sessions() as session:
        rest, end = await accounts_store.changed_accounts(session, after=after, limit=10)
        empty, same = await accounts_store.changed_accounts(session, after=end, limit=10)
    assert [(item.account_id, item.sequence) for item in rest] == [("c", 1), ("a", 2)]
    assert (empty, same) == ([], None)


async def test_a_lead_listed_twice_in_one_record_is_one_contact(sessions: Sessions) -> None:
    score = account_score("acme", 1, {"ada": 40.0})
    twice = score.model_copy(update={"members": [*score.members, *score.members]})
    await record(sessions, twice)
    assert await members(sessions, "acme") == ["ada"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"total": float("inf")}, "not finite"),
        ({"account_id": "a" * 257}, "too long"),
        ({"account_id": "acme\x00"}, "control characters"),
        ({"traits": {"name": ["Acme\x00"]}}, "NUL"),
    ],
)
async def test_what_the_database_would_refuse_is_refused_first(
    sessions: Sessions, change: dict[str, object], reason: str
) -> None:
    bad = account_score("acme", 1, {"ada": 40.0}).model_copy(update=change)
    with pytest.raises(ValueError, match=reason):
        accounts_store.require_storable(bad)
    with pytest.raises(ValueError, match=reason):
        await record(sessions, bad)
