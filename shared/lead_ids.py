"""The one rule that makes two spellings of a lead's id the same lead.

``Ada@Example.com `` and ``ada@example.com`` are one person: with the ``email`` rule
(the default) an id that is an e-mail address is trimmed and case-folded; any other id
(a CRM's record id, an ``anon:`` visitor id) is only trimmed, since ``X7`` and ``x7``
may be two records. ``none`` keeps ids as sent (trimmed), for an installation whose
ids were case-sensitive before the rule existed.

Ingest applies it to every event it accepts, before the event is keyed and written,
so scoring, the pipeline and erasure only ever see the normalised id; whatever looks a
lead up by id (the pipeline's ``/v1/leads/{lead_id}``, erasure) applies the same rule
to the id it is given.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from shared.events import IDENTITY_MERGE, EventIn

LeadIdRule = Literal["email", "none"]

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
"""Something at a dotted domain, no spaces: an address, not a validation of one."""


def normalize(lead_id: str, rule: LeadIdRule) -> str:
    """``lead_id`` as the lead is known: idempotent, so applying it twice changes nothing.

    The local part of an address is case-sensitive by the letter of RFC 5321, but no
    mailbox provider treats it so, and a lead split in two by a capital costs more.
    """
    trimmed = lead_id.strip()
    if rule == "email" and _EMAIL.fullmatch(trimmed):
        folded = trimmed.casefold()
        if len(folded) <= 256:  # casefold can lengthen (ß -> ss); an id stays in bounds
            return folded
        return trimmed.lower()
    return trimmed


def normalized(events: Sequence[EventIn], rule: LeadIdRule) -> list[EventIn]:
    """``events`` with their lead ids normalised, the lead an ``identity.merge`` merges into
    too; the unchanged ones are the same objects."""
    out = []
    for event in events:
        update: dict[str, object] = {}
        lead_id = normalize(event.lead_id, rule)
        if lead_id != event.lead_id:
            update["lead_id"] = lead_id
        into = event.properties.get("into")
        if event.type == IDENTITY_MERGE and isinstance(into, str):
            target = normalize(into, rule)
            if target != into:
                update["properties"] = {**event.properties, "into": target}
        out.append(event.model_copy(update=update) if update else event)
    return out
