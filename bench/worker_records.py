"""What one scoring worker writes for a stream of input records, computed in process.

The same pieces the worker encodes a batch with (:class:`~services.scoring.batch.
BatchScoring`, :class:`~services.scoring.worker.ScoredBatch`, the changelog's
:func:`~services.scoring.state_records.lead_record`, the account contributions), over the
stream split into partitions by the producers' partitioner and cut into batches of the
worker's size: per input record, the score update and stage change it brings, and the
changelog record its lead is written with afterwards. Two cases read it: the scoring
case's same-records passthrough writes records of those sizes, and the memory case
restores the changelog a worker left behind.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from services.scoring.account_contributions import contribute
from services.scoring.batch import BatchScoring
from services.scoring.lead import DEFAULT_HORIZON, LeadState
from services.scoring.membership import Membership, load_free_mail_domains
from services.scoring.model import ScoringModel, load_model
from services.scoring.state_records import APPLIED_OFFSET_KEY, applied_offset_record, lead_record
from services.scoring.worker import ScoredBatch
from shared.kafka import PARTITIONER, encode_key

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class InputRecord:
    """A consumed record as :class:`BatchScoring` reads one."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Output:
    """One record written: its size and its headers (values as written)."""

    size: int
    headers: Headers = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Written:
    """What the worker writes for one input record (empty when it scored nothing)."""

    score: Output | None = None
    change: Output | None = None
    state: int = 0
    """Size of the lead's changelog record at the end of the record's batch (what the
    batch writes for the lead); 0: none."""


@dataclass
class WrittenBatch:
    """One partition batch: per input record what it brings, and the batch's transaction."""

    partition: int
    inputs: list[tuple[bytes, Written]] = field(default_factory=list)
    """``(input value, what it brings)`` in offset order."""
    outputs: dict[str, list[int]] = field(default_factory=dict)
    """Record sizes per kind (``scores``, ``stage-changes``, ``changelog``, ...) the
    transaction holds."""
    changelog: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    """The changelog records, as written (leads, memberships, the offset marker)."""


def partition_of(key: bytes, partitions: int) -> int:
    return PARTITIONER(key, list(range(partitions)), None)


def split(records: Sequence[tuple[bytes, bytes]], partitions: int) -> list[list[InputRecord]]:
    """The records as each partition holds them, offsets from 0."""
    shares: list[list[InputRecord]] = [[] for _ in range(partitions)]
    for key, value in records:
        partition = partition_of(key, partitions)
        share = shares[partition]
        share.append(InputRecord("events", partition, len(share), key, value))
    return shares


def written_batches(
    records: Sequence[tuple[bytes, bytes]],
    *,
    partitions: int,
    batch_records: int,
    model: ScoringModel | None = None,
    horizon: timedelta = DEFAULT_HORIZON,
) -> Iterator[WrittenBatch]:
    """Every partition's batches, partition after partition, each scored on top of the
    states its partition's earlier batches left."""
    model = model or load_model()
    free_mail = load_free_mail_domains()
    for partition, share in enumerate(split(records, partitions)):
        known: dict[str, LeadState] = {}
        memberships: dict[str, Membership] = {}
        applied = -1
        for start in range(0, len(share), batch_records):
            chunk = share[start : start + batch_records]
            batch = _score_batch(model, known, memberships, free_mail, chunk, applied, horizon)
            batch.partition = partition
            applied = chunk[-1].offset
            yield batch


def _score_batch(
    model: ScoringModel,
    known: dict[str, LeadState],
    memberships: dict[str, Membership],
    free_mail: frozenset[str],
    chunk: Sequence[InputRecord],
    applied: int,
    horizon: timedelta,
) -> WrittenBatch:
    scoring = BatchScoring(model, known, applied_offset=applied, horizon=horizon)
    scored_inputs: list[tuple[bytes, str | None, Output | None, Output | None]] = []
    encoded = ScoredBatch()
    for record in chunk:
        before = len(scoring.result.scored)
        scoring.add(record)
        assert record.value is not None
        if len(scoring.result.scored) == before:
            scored_inputs.append((record.value, None, None, None))
            continue
        scored = scoring.result.scored[-1]
        encoded.emit_score("scores", scored.key, scored.score)
        score = _output(encoded.outputs["scores"][-1])
        change = None
        if scored.stage_change is not None:
            encoded.emit_change("stage-changes", scored.key, scored.stage_change)
            change = _output(encoded.outputs["stage-changes"][-1])
        scored_inputs.append((record.value, scored.lead_id, score, change))
    result = scoring.finish()
    states = {lead_id: lead_record(state) for lead_id, state in result.leads.items()}
    accounts = contribute(result, memberships, model, free_mail)
    changelog: list[tuple[bytes, bytes | None]] = [
        *((encode_key(lead_id), value) for lead_id, value in states.items()),
        *accounts.changelog,
        (APPLIED_OFFSET_KEY, applied_offset_record(result.applied_offset)),
    ]
    per_input = [
        (value, Written(score, change, len(states.get(lead_id, b"")) if lead_id else 0))
        for value, lead_id, score, change in scored_inputs
    ]
    outputs = {topic: [len(r[1]) for r in records] for topic, records in encoded.outputs.items()}
    outputs["account-contributions"] = [len(value) for _, value in accounts.contributions]
    outputs["dead-letters"] = [0] * len(result.refused)
    outputs["changelog"] = [len(value or b"") for _, value in changelog]
    return WrittenBatch(-1, per_input, outputs, changelog)


def _output(record: tuple[bytes | None, bytes] | tuple[bytes | None, bytes, Headers]) -> Output:
    headers = list(record[2]) if len(record) == 3 else []
    return Output(len(record[1]), headers)


@dataclass
class Transaction:
    """The records a same-records passthrough writes for one batch, as the worker would:
    the changelog (one record per lead of the batch, then the offset marker) for the
    input's own changelog partition, then score updates and stage changes, keyed by lead."""

    changelog: list[tuple[bytes, bytes]] = field(default_factory=list)
    scores: list[tuple[bytes, bytes, Headers]] = field(default_factory=list)
    changes: list[tuple[bytes, bytes, Headers]] = field(default_factory=list)


class Filler:
    """Values of a given size (the broker and the client treat any bytes alike, uncompressed),
    one object per size."""

    def __init__(self) -> None:
        self._values: dict[int, bytes] = {}

    def __call__(self, size: int) -> bytes:
        value = self._values.get(size)
        if value is None:
            value = self._values[size] = b"x" * size
        return value


def transaction_of(
    batch: Iterable[tuple[bytes | None, bytes | None]],
    written: dict[bytes, Written],
    last_offset: int,
    filler: Filler,
) -> Transaction:
    """What the worker writes for ``batch`` (``(key, value)`` in offset order), from what
    each input brings (``written``, by input value; an unknown input brings nothing)."""
    transaction = Transaction()
    states: dict[bytes, int] = {}
    for key, value in batch:
        brings = written.get(value or b"")
        if brings is None or key is None:
            continue
        if brings.score is not None:
            transaction.scores.append((key, filler(brings.score.size), brings.score.headers))
        if brings.change is not None:
            transaction.changes.append((key, filler(brings.change.size), brings.change.headers))
        if brings.state:
            states[key] = brings.state
    transaction.changelog = [(key, filler(size)) for key, size in states.items()]
    transaction.changelog.append((APPLIED_OFFSET_KEY, applied_offset_record(last_offset)))
    return transaction


def written_by_input(batches: Iterator[WrittenBatch]) -> dict[bytes, Written]:
    """What each input value brings, over a whole stream's batches."""
    return {value: brings for batch in batches for value, brings in batch.inputs}
