"""The account stage's changelog records (``leadflow.account-state``): an account's state,
to and from bytes; the one home of their layout. The offset marker is the lead stage's
(:mod:`services.scoring.state_records`), so both changelogs read alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from services.scoring.lead import Trait
from services.scoring.rollup import AccountState
from shared.account_events import ContactScore
from shared.events import Stage

ACCOUNT_FORMAT = 1


def account_record(state: AccountState) -> bytes:
    return orjson.dumps(
        {
            "format": ACCOUNT_FORMAT,
            "account_id": state.account_id,
            "contacts": [
                (lead_id, c.fit, c.engagement, c.total, c.stage.value)
                for lead_id, c in state.contacts.items()
            ],
            "traits": {name: (t.value, t.set_at_us) for name, t in state.traits.items()},
            "as_of": state.as_of_us,
            "sequence": state.sequence,
            "published_total": state.published_total,
        }
    )


def read_account(data: Mapping[str, Any]) -> AccountState:
    """An account's state from its decoded record; ``ValueError`` on an unknown layout."""
    if data.get("format") != ACCOUNT_FORMAT:
        raise ValueError(f"unknown account state format {data.get('format')!r}")
    return AccountState(
        account_id=data["account_id"],
        contacts={
            lead_id: ContactScore(fit=fit, engagement=engagement, total=total, stage=Stage(stage))
            for lead_id, fit, engagement, total, stage in data["contacts"]
        },
        traits={name: Trait(value, int(at)) for name, (value, at) in data["traits"].items()},
        as_of_us=None if data["as_of"] is None else int(data["as_of"]),
        sequence=int(data["sequence"]),
        published_total=data["published_total"],
    )
