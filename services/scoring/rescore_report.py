"""The dry-run report of a new model: what would change, before it is live. Pure, no I/O.

It compares each lead's live score ("now": its latest record on ``leadflow.scores``, what
the pipeline and CRMs hold) with its score replayed under the new model ("new"): leads
per stage, who moves up or down between which stages, the biggest movers and the rules
that moved them, the score histograms, and whether ``leadflow.events`` still holds every
lead's whole history. The result is plain JSON types: ``leadflow rescore --report`` writes
it as it is, and :func:`render_text` words it for a terminal.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.scoring.event_history import PartitionSpan
from services.scoring.scoring import NewScore
from shared.events import Stage

TOP_MOVERS = 20
BIN_WIDTH = 10.0
"""Points per bar of the histograms."""

STAGE_RANK = {
    Stage.DISQUALIFIED: -1,
    Stage.LEAD: 0,
    Stage.PROSPECT: 1,
    Stage.OPPORTUNITY: 2,
    Stage.CUSTOMER: 3,
}
"""Up and down: the forward order of the stages, disqualified below them all."""

HISTORY_NOTE = (
    "leadflow.events no longer holds the whole history of these partitions (retention):"
    " their leads' fit can be recomputed from the traits in their state, but engagement"
    " earned by the events deleted cannot, so their new scores would be too low; leads"
    " with no event left are not rescored at all."
)


@dataclass(frozen=True, slots=True)
class LeadScore:
    """One lead's score under one model, as the report compares them."""

    lead_id: str
    stage: Stage
    total: float
    model_version: str
    points: Mapping[str, float] = field(default_factory=dict)
    """Points per rule id (fit and engagement), from the score's breakdown."""

    @classmethod
    def of_update(cls, update: Mapping[str, Any]) -> LeadScore:
        """From a score update as decoded JSON (a record of ``leadflow.scores``)."""
        return cls(
            update["lead_id"],
            Stage(update["stage"]),
            float(update["total"]),
            str(update["model_version"]),
            _points((c["rule"], c["points"]) for c in update["breakdown"]),
        )

    @classmethod
    def of_score(cls, score: NewScore) -> LeadScore:
        return cls(
            score.lead_id,
            score.stage,
            score.total,
            score.model_version,
            _points((c["rule"], c["points"]) for c in score.breakdown),
        )


def rule_id(label: str) -> str:
    """The rule id of a breakdown label (``"page-view: no longer in the model"``)."""
    return label.split(":", 1)[0]


def _points(pairs: Iterable[tuple[str, float]]) -> dict[str, float]:
    points: dict[str, float] = {}
    for label, value in pairs:
        rule = rule_id(label)
        points[rule] = points.get(rule, 0.0) + float(value)
    return points


def build_report(
    now: Mapping[str, LeadScore],
    new: Mapping[str, LeadScore],
    *,
    new_version: str,
    spans: Sequence[PartitionSpan],
    partition_of: Callable[[str], int],
    top: int = TOP_MOVERS,
    bin_width: float = BIN_WIDTH,
) -> dict[str, Any]:
    """The report (see the module); ``partition_of`` gives a lead's events partition."""
    both = sorted(now.keys() & new.keys())
    matrix: dict[str, dict[str, int]] = {}
    up = down = 0
    for lead_id in both:
        before, after = now[lead_id].stage, new[lead_id].stage
        if before == after:
            continue
        row = matrix.setdefault(before.value, {})
        row[after.value] = row.get(after.value, 0) + 1
        if STAGE_RANK[after] > STAGE_RANK[before]:
            up += 1
        else:
            down += 1
    return {
        "models": {
            "now": dict(sorted(Counter(s.model_version for s in now.values()).items())),
            "new": new_version,
        },
        "leads": {
            "now": len(now),
            "new": len(new),
            "compared": len(both),
            "only_now": len(now.keys() - new.keys()),
            "only_new": len(new.keys() - now.keys()),
        },
        "stages": {
            "now": _per_stage(now.values()),
            "new": _per_stage(new.values()),
        },
        "moves": {
            "up": up,
            "down": down,
            "unchanged": len(both) - up - down,
            "matrix": {k: dict(sorted(v.items())) for k, v in sorted(matrix.items())},
        },
        "top_movers": [
            _mover(now[lead_id], new[lead_id]) for lead_id in _movers(both, now, new, top)
        ],
        "histogram": histogram(
            [s.total for s in now.values()], [s.total for s in new.values()], bin_width
        ),
        "history": _history(now, spans, partition_of, new.keys()),
    }


def _per_stage(scores: Iterable[LeadScore]) -> dict[str, int]:
    counts = Counter(score.stage for score in scores)
    return {stage.value: counts.get(stage, 0) for stage in Stage}


def _movers(
    both: Sequence[str], now: Mapping[str, LeadScore], new: Mapping[str, LeadScore], top: int
) -> list[str]:
    """The ``top`` leads whose total moves most; a stage change first among equals."""

    def rank(lead_id: str) -> tuple[float, bool, str]:
        before, after = now[lead_id], new[lead_id]
        return (-abs(after.total - before.total), before.stage == after.stage, lead_id)

    moved = [i for i in both if now[i].total != new[i].total or now[i].stage != new[i].stage]
    return sorted(moved, key=rank)[:top]


def _mover(before: LeadScore, after: LeadScore) -> dict[str, Any]:
    moved: list[tuple[str, float, float]] = []
    for rule in sorted(before.points.keys() | after.points.keys()):
        was, will = before.points.get(rule, 0.0), after.points.get(rule, 0.0)
        if not math.isclose(was, will, abs_tol=1e-9):
            moved.append((rule, was, will))
    moved.sort(key=lambda r: (-abs(r[2] - r[1]), r[0]))
    rules = [{"rule": r, "now": was, "new": will, "delta": will - was} for r, was, will in moved]
    return {
        "lead_id": before.lead_id,
        "stage_now": before.stage.value,
        "stage_new": after.stage.value,
        "total_now": before.total,
        "total_new": after.total,
        "delta": after.total - before.total,
        "rules": rules,
    }


def histogram(now: Sequence[float], new: Sequence[float], bin_width: float) -> dict[str, Any]:
    """Both distributions over the same bins ``[from, to)`` of ``bin_width`` points."""
    values = [*now, *new]
    if not values:
        return {"bin_width": bin_width, "bins": []}
    low = math.floor(min(values) / bin_width)
    high = math.floor(max(values) / bin_width)
    counts_now = Counter(math.floor(v / bin_width) for v in now)
    counts_new = Counter(math.floor(v / bin_width) for v in new)
    bins = [
        {
            "from": index * bin_width,
            "to": (index + 1) * bin_width,
            "now": counts_now.get(index, 0),
            "new": counts_new.get(index, 0),
        }
        for index in range(low, high + 1)
    ]
    return {"bin_width": bin_width, "bins": bins}


def _history(
    now: Mapping[str, LeadScore],
    spans: Sequence[PartitionSpan],
    partition_of: Callable[[str], int],
    replayed: Iterable[str],
) -> dict[str, Any]:
    truncated = {span.partition for span in spans if not span.complete}
    replayed_ids = set(replayed)
    affected = [lead_id for lead_id in now if partition_of(lead_id) in truncated]
    history: dict[str, Any] = {
        "complete": not truncated,
        "partitions": [
            {"partition": s.partition, "earliest_offset": s.earliest, "end_offset": s.end}
            for s in spans
        ],
        "leads_with_partial_history": len(affected),
        "leads_without_events": sum(1 for lead_id in affected if lead_id not in replayed_ids),
    }
    if truncated:
        history["note"] = HISTORY_NOTE
    return history


def render_text(report: Mapping[str, Any]) -> str:
    """The report for people: a few aligned tables."""
    lines: list[str] = []
    models, leads = report["models"], report["leads"]
    now_versions = ", ".join(f"{v} ({n})" for v, n in models["now"].items()) or "none"
    lines += [
        f"Rescoring under model {models['new']} (leads now scored by: {now_versions})",
        f"leads: {leads['now']} now, {leads['new']} under the new model, {leads['compared']}"
        f" compared ({leads['only_now']} only now, {leads['only_new']} only new)",
        "",
        f"{'stage':<14}{'now':>10}{'new':>10}{'change':>10}",
    ]
    stages = report["stages"]
    for stage in stages["now"]:
        before, after = stages["now"][stage], stages["new"][stage]
        lines.append(f"{stage:<14}{before:>10}{after:>10}{after - before:>+10}")
    moves = report["moves"]
    lines += [
        "",
        f"moves: {moves['up']} up, {moves['down']} down, {moves['unchanged']} unchanged",
    ]
    for before, row in moves["matrix"].items():
        for after, count in row.items():
            lines.append(f"  {before:>12} -> {after:<12}{count:>8}")
    lines += ["", f"top {len(report['top_movers'])} movers:"]
    for mover in report["top_movers"]:
        rules = ", ".join(f"{r['rule']} {r['delta']:+.1f}" for r in mover["rules"][:4]) or "-"
        lines.append(
            f"  {mover['lead_id']:<32} {mover['stage_now']:>12} -> {mover['stage_new']:<12}"
            f" {mover['total_now']:>8.1f} -> {mover['total_new']:<8.1f} {rules}"
        )
    bins = report["histogram"]["bins"]
    lines += ["", f"{'score':<16}{'now':>8}{'new':>8}"]
    widest = max((max(b["now"], b["new"]) for b in bins), default=0) or 1
    for b in bins:
        bar = "#" * round(20 * b["now"] / widest)
        bar_new = "#" * round(20 * b["new"] / widest)
        span = f"[{b['from']:g}, {b['to']:g})"
        lines.append(f"{span:<16}{b['now']:>8}{b['new']:>8}  {bar:<20} | {bar_new}")
    history = report["history"]
    lines.append("")
    if history["complete"]:
        lines.append("history: leadflow.events holds every partition from offset 0: complete")
    else:
        cut = [p for p in history["partitions"] if p["earliest_offset"] > 0]
        where = ", ".join(f"{p['partition']} (from offset {p['earliest_offset']})" for p in cut)
        lines += [
            f"history: INCOMPLETE in partitions {where}:"
            f" {history['leads_with_partial_history']} leads may miss events,"
            f" {history['leads_without_events']} have none left.",
            history["note"],
        ]
    return "\n".join(lines) + "\n"
