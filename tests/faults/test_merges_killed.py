"""Identity merges while scoring is SIGKILLed: no merged event lost, none counted twice.

Anonymous visitors browse, then become known leads that live on other partitions (a
Segment identify naming both ids, or an alias, through ingest); both ids go on sending.
Scoring (a real process) is killed mid-stream, once with a merge held between its two
transactions (docs/architecture.md §5.12: the visitor's partition has retired it and
written the merge record, the known lead's partition has not folded it), and restarted
each time. Each known lead must end as the reference folded over what its partition
holds, the merge taken as one step of the visitor's events; every output once; nothing
left of the visitors but their alias markers.
"""

from __future__ import annotations

import asyncio
import operator
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
import pytest

from devtools.processes import ServiceProcess
from services.scoring.identity import (
    FORWARDED_FROM_HEADER,
    MERGE_PREFIX,
    Merge,
    alias_key,
    read_alias,
)
from services.scoring.model import load_model
from shared.events import (
    ANONYMOUS_PREFIX,
    IDENTITY_MERGE,
    Event,
    ScoreUpdate,
    StageChange,
    format_time,
)
from shared.kafka import PARTITIONER, encode_key, make_admin, make_producer
from shared.settings import LeadflowSettings
from tests.faults.deployment import Deployment, Platform
from tests.merge_reference import MergedExpected, MergeStep, applied_events, fold_partition
from tests.reference import change_sequence_problems
from tests.topics import read_to_end
from tests.waiting import eventually

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

MODEL = load_model()
PAIRS = 45
QUALIFIED = {"industry": "saas", "employees": 200, "budget_usd": 20000, "job_level": "vp"}


@dataclass
class Pair:
    """A known lead and the visitor that becomes it, on another partition."""

    known: str
    visitor: str
    before: list[dict[str, Any]] = field(default_factory=list)
    """The visitor's events before the merge."""
    own: list[dict[str, Any]] = field(default_factory=list)
    merge: dict[str, Any] = field(default_factory=dict)
    """The Segment call that merges them: an identify naming both ids, or an alias."""
    visitor_later: list[dict[str, Any]] = field(default_factory=list)
    own_later: list[dict[str, Any]] = field(default_factory=list)


def event(lead: str, kind: str, at: datetime, number: int, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": f"{lead}/{number}",
        "type": kind,
        "lead_id": lead,
        "occurred_at": format_time(at),
        **fields,
    }


def segment_merge(n: int, known: str, visitor: str, at: datetime) -> dict[str, Any]:
    """An identify with both ids (its traits the known lead's, so they win over the
    visitor's on conflict) for even ``n``, an alias for odd ``n``."""
    anonymous = visitor.removeprefix(ANONYMOUS_PREFIX)
    call: dict[str, Any] = {"userId": known, "messageId": f"call-{n}", "timestamp": format_time(at)}
    if n % 2 == 0:
        return {**call, "type": "identify", "anonymousId": anonymous, "traits": {"country": "GB"}}
    return {**call, "type": "alias", "previousId": anonymous}


async def post_segment(url: str, calls: Sequence[dict[str, Any]], retry_for: float = 120) -> None:
    """``POST /v1/batch`` as the SDKs do: 5xx and a failed connection retried, same calls."""
    deadline = time.monotonic() + retry_for
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while True:
            try:
                response = await client.post("/v1/batch", json={"batch": list(calls)})
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 200:
                return
            if response is not None and response.status_code < 500:
                raise AssertionError(f"ingest refused the calls: {response.text}")
            assert time.monotonic() < deadline, f"ingest kept failing for {retry_for}s"
            await asyncio.sleep(0.2)


def partition_of(lead_id: str, partitions: int) -> int:
    return int(PARTITIONER(encode_key(lead_id), list(range(partitions)), None))


def make_pairs(partitions: int, t0: datetime) -> list[Pair]:
    """Visitors with pricing views (over the daily cap once both ids count), clicks, a
    demo request for every other one (the merge then makes an opportunity) and traits
    that partly conflict with the known lead's."""
    pairs = []
    for n in range(PAIRS):
        known = f"known-{n}@example.com"
        visitor = next(
            f"anon:v{n}-{k}"
            for k in range(100)
            if partition_of(f"anon:v{n}-{k}", partitions) != partition_of(known, partitions)
        )
        pair = Pair(known, visitor)
        at = t0 + timedelta(minutes=n)
        pricing = {"properties": {"path": "/pricing"}}
        pair.before = [
            event(visitor, "page.viewed", at, 1, **pricing),
            event(visitor, "page.viewed", at + timedelta(minutes=1), 2, **pricing),
            event(visitor, "email.clicked", at + timedelta(minutes=2), 3),
            event(visitor, "lead.updated", at + timedelta(minutes=3), 4,
                  traits={"industry": "retail", "country": "US"}),
            event(visitor, "demo.requested" if n % 2 == 0 else "email.opened",
                  at + timedelta(minutes=4), 5),
        ]  # fmt: skip
        traits = QUALIFIED if n % 3 else {"industry": "saas"}
        pair.own = [
            event(known, "lead.updated", at + timedelta(minutes=10), 1, traits=traits),
            event(known, "form.submitted", at + timedelta(minutes=11), 2),
            event(known, "email.clicked", at + timedelta(minutes=12), 3),
        ]
        merged_at = at + timedelta(hours=1)
        pair.merge = segment_merge(n, known, visitor, merged_at)
        pair.visitor_later = [
            event(visitor, "page.viewed", merged_at + timedelta(minutes=5), 6, **pricing),
            event(visitor, "page.viewed", merged_at + timedelta(minutes=6), 7, **pricing),
        ]
        pair.own_later = [
            event(known, "webinar.attended", merged_at + timedelta(minutes=7), 4),
            event(known, "email.opened", merged_at + timedelta(minutes=8), 5),
        ]
        pairs.append(pair)
    return pairs


async def committed(deployment: Deployment) -> dict[int, int]:
    admin = make_admin(deployment.settings, name="test-offsets")
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(f"{deployment.namespace}-scoring")
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()}


async def kill_when(
    deployment: Deployment, scoring: ServiceProcess, reached: Callable[[int], bool]
) -> None:
    """SIGKILL scoring once its committed progress satisfies ``reached``; restart it."""
    await eventually(deployment.scored, reached, timeout=120, interval=0.02)
    scoring.kill()
    deployment.restart(scoring)


async def alias_markers(settings: LeadflowSettings) -> dict[str, str]:
    """The committed alias markers of the changelog: visitor -> known lead."""
    markers = {}
    for record in await read_to_end(settings, settings.topics.scoring_state):
        if record.key.startswith(alias_key("")) and record.value is not None:
            markers[record.key[len(alias_key("")) :].decode()] = read_alias(record.value)
    return markers


async def hold_a_merge_between_its_transactions(
    deployment: Deployment, scoring: ServiceProcess, platform_url: str, pairs: Sequence[Pair]
) -> dict[str, Any]:
    """Post every merge while a transaction of the test's own holds the first known lead's
    partition (read_committed readers stop at an open transaction); once the visitor's
    partition has committed the retirement, SIGKILL scoring: that merge is between its two
    transactions for sure, the others wherever they are. Then the holding transaction
    commits and scoring restarts. Returns the event the holding transaction carried."""
    settings, pair = deployment.settings, pairs[0]
    held = partition_of(pair.known, deployment.partitions)
    holder = make_producer(
        settings, name="test-holder", transactional_id=f"{deployment.namespace}-holder"
    )
    merged_at = datetime.fromisoformat(pair.merge["timestamp"])
    extra = event(pair.known, "email.opened", merged_at + timedelta(seconds=30), 9)
    await holder.start()
    try:
        await holder.begin_transaction()
        value = Event.model_validate(extra).to_json()
        sent = await holder.send(settings.topics.events, value, key=encode_key(pair.known))
        held_at = (await sent).offset
        for start in range(0, len(pairs), 15):
            await post_segment(platform_url, [p.merge for p in pairs[start : start + 15]])
        await eventually(partial(alias_markers, settings), lambda m: pair.visitor in m, timeout=120)
        scoring.kill()
        # the known partition cannot have gone past the open transaction, so not folded
        assert (await committed(deployment)).get(held, 0) <= held_at
        await holder.commit_transaction()
    finally:
        await holder.stop()
    deployment.restart(scoring)
    return extra


def forwarded_from(record: Any) -> str | None:
    for name, value in record.headers or ():
        if name == FORWARDED_FROM_HEADER:
            return bytes(value).decode()
    return None


async def wait_until_settled(deployment: Deployment) -> None:
    """Until every merge and forward is written and scoring committed every partition to
    its last record: nothing more will come out."""
    settings = deployment.settings

    async def probe() -> tuple[int, int, dict[int, int]]:
        records = await read_to_end(settings, settings.topics.events)
        done = await committed(deployment)
        last: dict[int, int] = {}
        for record in records:
            last[record.partition] = max(last.get(record.partition, -1), record.offset)
        merges = sum(record.value.startswith(MERGE_PREFIX) for record in records)
        forwards = sum(forwarded_from(record) is not None for record in records)
        behind = {p: offset for p, offset in last.items() if done.get(p, 0) <= offset}
        return merges, forwards, behind

    def settled(seen: tuple[int, int, dict[int, int]]) -> bool:
        merges, forwards, behind = seen
        return merges >= PAIRS and forwards >= 2 * PAIRS and not behind

    await eventually(probe, settled, timeout=180, interval=0.5)


async def test_merges_count_once_while_scoring_is_killed_around_them(
    deployment: Deployment,
) -> None:
    rng = random.Random(16)
    t0 = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
    pairs = make_pairs(deployment.partitions, t0)
    first = [e for pair in pairs for e in (*pair.before, *pair.own)]
    later = [e for pair in pairs for e in (*pair.visitor_later, *pair.own_later)]
    ingest = deployment.start("ingest")
    scoring = deployment.start("scoring")
    platform = Platform(ingest.url)
    try:
        # a kill at a random point of both ids' events before the merges
        start = await deployment.scored()
        posting = asyncio.create_task(platform.post_all(first, batch_size=30, pause=0.02))
        share = rng.uniform(0.3, 0.7)
        await kill_when(deployment, scoring, partial(operator.le, start + int(share * len(first))))
        await posting
        extra = await hold_a_merge_between_its_transactions(deployment, scoring, ingest.url, pairs)
        # a kill at a random point of what follows, the visitors' forwarded events among it
        start = await deployment.scored()
        posting = asyncio.create_task(platform.post_all(later, batch_size=30, pause=0.02))
        share = rng.uniform(0.2, 0.6)
        await kill_when(deployment, scoring, partial(operator.le, start + int(share * len(later))))
        await posting
        await wait_until_settled(deployment)
    finally:
        await platform.close()
    await assert_merged_exactly_once(deployment, pairs, extra)


async def assert_merged_exactly_once(
    deployment: Deployment, pairs: Sequence[Pair], extra: dict[str, Any]
) -> None:
    settings = deployment.settings
    topics = settings.topics
    events = await read_to_end(settings, topics.events)
    scores = [
        ScoreUpdate.model_validate_json(r.value)
        for r in await read_to_end(settings, topics.scores)
        if r.value is not None
    ]
    changes = [
        StageChange.model_validate_json(r.value)
        for r in await read_to_end(settings, topics.stage_changes)
        if r.value is not None
    ]
    changelog = {
        (r.partition, r.key): r.value for r in await read_to_end(settings, topics.scoring_state)
    }
    assert change_sequence_problems(changes) == []
    scores_of: dict[str, list[ScoreUpdate]] = defaultdict(list)
    for update in scores:
        scores_of[update.lead_id].append(update)
    changes_of: dict[str, list[StageChange]] = defaultdict(list)
    for change in changes:
        changes_of[change.lead_id].append(change)
    partitions = deployment.partitions
    moved_by_merges = 0
    for pair in pairs:
        steps = partition_steps(pair, events, partitions)
        expected = fold_partition(pair.known, steps, MODEL)
        merge_ids = {step.merge_id for step in steps if isinstance(step, MergeStep)}
        moved_by_merges += sum(change[3] in merge_ids for change in expected.changes)
        assert_lead(expected, scores_of[pair.known], changes_of[pair.known], pair)
        visitor_applied = applied_events(map(Event.model_validate, pair.before), MODEL)
        assert_visitor(pair, scores_of[pair.visitor], visitor_applied)
        visitor_partition = partition_of(pair.visitor, partitions)
        assert changelog[(visitor_partition, encode_key(pair.visitor))] is None  # retired
        marker = changelog[(visitor_partition, alias_key(pair.visitor))]
        assert marker is not None
        assert read_alias(marker) == pair.known
    assert moved_by_merges >= PAIRS // 4  # the demo requests carried make opportunities
    held = [s for s in partition_steps(pairs[0], events, partitions) if isinstance(s, Event)]
    assert extra["event_id"] in {e.event_id for e in held}


def partition_steps(pair: Pair, events: Sequence[Any], partitions: int) -> list[Event | MergeStep]:
    """The known lead's records in its partition's order, after checking what the routing
    put there: one merge record carrying exactly the visitor's applied events, and each
    record of the visitor after its merge forwarded once."""
    visitor_partition = partition_of(pair.visitor, partitions)
    visitor_key, known_key = encode_key(pair.visitor), encode_key(pair.known)
    mine = [
        Event.model_validate_json(r.value)
        for r in events
        if r.partition == visitor_partition and r.key == visitor_key
    ]
    requests = [e for e in mine if e.type == IDENTITY_MERGE]
    assert requests, f"{pair.visitor}: no merge request"
    merge_id = requests[0].event_id
    after = [e.event_id for e in mine[mine.index(requests[0]) + 1 :] if e.type != IDENTITY_MERGE]
    steps: list[Event | MergeStep] = []
    merges: list[Merge] = []
    forwarded: list[str] = []
    sent_before = [Event.model_validate(e) for e in pair.before]
    for record in events:
        if record.partition != partition_of(pair.known, partitions) or record.key != known_key:
            continue
        if record.value.startswith(MERGE_PREFIX):
            merge = Merge.read(record.value)
            merges.append(merge)
            steps.append(MergeStep(merge.merge_id, sent_before))
            continue
        step = Event.model_validate_json(record.value)
        if forwarded_from(record) is not None:
            assert forwarded_from(record) == pair.visitor
            forwarded.append(step.event_id)
        steps.append(step)
    assert len(merges) == 1, f"{pair.known}: {len(merges)} merge records"
    [merge] = merges
    assert (merge.merge_id, merge.merged_from, merge.lost) == (
        merge_id,
        pair.visitor,
        0,
    )
    carried = [Event.model_validate_json(raw).event_id for raw in merge.events]
    assert carried == [e.event_id for e in applied_events(sent_before, MODEL)]
    assert Counter(forwarded) == Counter(after)
    assert set(forwarded) == {e["event_id"] for e in pair.visitor_later}
    return steps


def assert_lead(
    expected: MergedExpected,
    scores: Sequence[ScoreUpdate],
    changes: Sequence[StageChange],
    pair: Pair,
) -> None:
    """Every score update once (the merge one of them), the final score the reference's,
    every stage change once."""
    lead = expected.lead_id
    updates = sorted(scores, key=lambda u: u.sequence)
    assert [u.sequence for u in updates] == list(range(1, len(expected.triggers) + 1)), lead
    assert [u.trigger_event_id for u in updates] == expected.triggers, lead
    [merged] = [u for u in updates if u.merged_from is not None]
    assert merged.merged_from == pair.visitor
    want, got = expected.last, updates[-1]
    assert want is not None, f"{lead}: the reference ends on its merge"
    assert got.stage == want.stage, lead
    assert (got.fit, got.engagement, got.total) == pytest.approx(
        (want.fit, want.engagement, want.total), abs=1e-9
    ), lead
    assert got.breakdown == want.breakdown, lead
    seen = [(c.sequence, c.from_stage, c.to_stage, c.trigger_event_id) for c in changes]
    assert sorted(seen, key=lambda c: c[0]) == expected.changes, lead


def assert_visitor(pair: Pair, scores: Sequence[ScoreUpdate], applied: Sequence[Event]) -> None:
    """The visitor's own score updates, each once, none after its merge."""
    updates = sorted(scores, key=lambda u: u.sequence)
    assert [u.sequence for u in updates] == list(range(1, len(applied) + 1)), pair.visitor
    assert [u.trigger_event_id for u in updates] == [e.event_id for e in applied]
