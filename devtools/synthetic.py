"""A realistic synthetic event stream: the demo, the benchmarks and soak tests share it.

Leads get profile traits drawn from plausible distributions (some fit the
ideal customer profile, most do not), then engagement over several weeks:
newsletter opens, clicks, site and pricing visits, the odd form, webinar or
demo request, and a few unsubscribes. Seeded, so a run can be reproduced.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

INDUSTRIES = ["software", "saas", "fintech", "ecommerce", "retail", "manufacturing", "education"]
COUNTRIES = ["US", "CA", "GB", "DE", "FR", "NL", "AU", "BR", "IN", "JP", "ES"]
JOB_LEVELS = ["c_level", "vp", "director", "owner", "manager", "individual", "student"]
CAMPAIGNS = ["nov-newsletter", "product-launch", "webinar-invite"]
PAGES = ["/", "/blog/scoring-101", "/features", "/pricing", "/pricing/enterprise", "/docs"]
ENGAGEMENT = [  # (type, relative weight)
    ("email.opened", 30),
    ("page.viewed", 30),
    ("email.clicked", 15),
    ("form.submitted", 4),
    ("webinar.attended", 2),
    ("demo.requested", 1),
    ("email.unsubscribed", 1),
]


def lead_traits(rng: random.Random) -> dict[str, Any]:
    return {
        "industry": rng.choice(INDUSTRIES),
        "employees": int(rng.lognormvariate(4, 1.5)),
        "country": rng.choice(COUNTRIES),
        "budget_usd": rng.choice([0, 2_000, 5_000, 10_000, 25_000, 100_000]),
        "job_level": rng.choice(JOB_LEVELS),
        "competitor": rng.random() < 0.02,
    }


def engagement_event(rng: random.Random) -> tuple[str, dict[str, Any]]:
    kinds, weights = zip(*ENGAGEMENT, strict=True)
    kind = rng.choices(kinds, weights)[0]
    if kind == "page.viewed":
        return kind, {"path": rng.choice(PAGES)}
    if kind.startswith("email."):
        return kind, {
            "campaign": rng.choice(["nov-newsletter", "product-launch", "webinar-invite"])
        }
    return kind, {}


def synthetic_stream(
    leads: int = 300,
    weeks: int = 6,
    events_per_lead: float = 12.0,
    seed: int = 7,
    end: datetime | None = None,
    run_id: str = "demo",
) -> Iterator[dict[str, Any]]:
    """Native events in time order across all leads (as platforms would post them)."""
    rng = random.Random(seed)
    end = end or datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(weeks=weeks)
    span = (end - start).total_seconds()
    events: list[tuple[datetime, dict[str, Any]]] = []
    for n in range(leads):
        lead_id = f"lead-{n:05d}@{run_id}.example.com"
        first_seen = start + timedelta(seconds=rng.uniform(0, span * 0.5))
        events.append(
            (first_seen, _event(lead_id, 0, "lead.updated", first_seen, {}, lead_traits(rng)))
        )
        # engaged leads do more: a heavy tail, as in real funnels
        count = int(rng.expovariate(1 / events_per_lead))
        for i in range(1, count + 1):
            when = first_seen + timedelta(
                seconds=rng.uniform(0, (end - first_seen).total_seconds())
            )
            kind, properties = engagement_event(rng)
            events.append((when, _event(lead_id, i, kind, when, properties, {})))
    events.sort(key=lambda pair: pair[0])
    for _, event in events:
        yield event


def _event(
    lead_id: str,
    index: int,
    kind: str,
    when: datetime,
    properties: dict[str, Any],
    traits: dict[str, Any],
) -> dict[str, Any]:
    return {
        "event_id": f"{lead_id}/{index}",
        "type": kind,
        "lead_id": lead_id,
        "occurred_at": when.isoformat().replace("+00:00", "Z"),
        "source": "synthetic",
        "properties": properties,
        "traits": traits,
    }
