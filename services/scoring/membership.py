"""Which account a lead belongs to, and what the lead stage remembers of it (docs §2.1).

Pure: the account follows from the lead's traits, its latest group call and the model's
``accounts.membership`` section, in this order of precedence (the first that names an
account wins):

1. a group call (an event of a ``group_events`` type): ``properties.group_id`` of the one
   with the latest event time (on a tie, the later applied);
2. the first ``account_id_traits`` trait that holds an id;
3. the first ``domain_traits`` trait that holds a web domain: the account is the domain;
4. only with ``email_domains``: the domain of the first ``email_traits`` address, else of
   the lead id when it is an address, unless the domain is a free-mail provider's
   (``free_mail_domains.txt``).

An explicit id always beats a guessed one, so a lead whose CRM says ``account_id: 42`` is
not also counted under its company's domain. Ids from 3 and 4 are domains, so a company
named by a group call (``acme-1``) and by its domain (``acme.com``) is two accounts: give
every source the same ids.

:class:`Membership` is what the lead stage keeps per lead in its changelog, beside the
lead's state: the latest group call, the account the lead is counted in, and the score it
was last counted with, so that a restart knows what the account already holds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson
from pydantic import JsonValue

from services.scoring.model import AccountMembership
from shared.account_events import ContactScore
from shared.events import Stage

FREE_MAIL_DOMAINS_PATH = Path(__file__).with_name("free_mail_domains.txt")
"""The free-mail providers, kept as data: one domain a line."""

MEMBERSHIP_PREFIX = b"\x00account\x00"
"""Changelog keys of memberships: the prefix, then the lead id. No lead id can collide:
identifiers refuse control characters."""

MAX_ACCOUNT_ID = 256

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]*$")


def load_free_mail_domains(path: Path = FREE_MAIL_DOMAINS_PATH) -> frozenset[str]:
    """The domains of the data file: one a line, ``#`` starts a comment, case folded."""
    domains = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        domain = line.split("#", 1)[0].strip().lower()
        if domain:
            domains.add(domain)
    return frozenset(domains)


@dataclass(frozen=True, slots=True)
class GroupCall:
    """A lead's latest group call: the account it names and its event time."""

    group_id: str
    at_us: int


@dataclass(frozen=True, slots=True)
class Membership:
    group: GroupCall | None = None
    account_id: str | None = None
    """The account the lead is counted in now; ``None``: none."""
    reported: ContactScore | None = None
    """The score the account holds for the lead (set while ``account_id`` is)."""

    @property
    def empty(self) -> bool:
        return self.group is None and self.account_id is None


def account_id_of(value: JsonValue) -> str | None:
    """An account id as a trait or a group call holds it: text, or an integer (CRMs)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > MAX_ACCOUNT_ID or _CONTROL_CHARS.search(text):
        return None
    return text


def web_domain(value: JsonValue) -> str | None:
    """``acme.com`` from ``https://www.Acme.com/about``, ``acme.com.`` or ``ACME.COM``."""
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    text = text.rsplit("@", 1)[-1].split(":", 1)[0].rstrip(".")
    if text.startswith("www."):
        text = text[4:]
    return text if _DOMAIN.match(text) else None


def email_domain(value: JsonValue) -> str | None:
    """The domain of an e-mail address, or ``None`` when it is not one."""
    if not isinstance(value, str) or value.count("@") != 1:
        return None
    local, domain = value.strip().split("@")
    if not local or any(c.isspace() for c in local):
        return None
    return web_domain(domain)


def resolve_account(
    lead_id: str,
    traits: Mapping[str, JsonValue],
    group: GroupCall | None,
    rules: AccountMembership,
    free_mail: frozenset[str],
) -> str | None:
    """The account a lead belongs to, by the precedence of the module's docstring."""
    if group is not None:
        return group.group_id
    for name in rules.account_id_traits:
        account = account_id_of(traits.get(name))
        if account is not None:
            return account
    for name in rules.domain_traits:
        domain = web_domain(traits.get(name))
        if domain is not None:
            return domain
    if rules.email_domains:
        candidates = [traits.get(name) for name in rules.email_traits]
        for candidate in [*candidates, lead_id]:
            domain = email_domain(candidate)
            if domain is not None:
                return None if domain in free_mail else domain
    return None


def membership_key(lead_id: str) -> bytes:
    return MEMBERSHIP_PREFIX + lead_id.encode()


def lead_of_key(key: bytes) -> str:
    return key[len(MEMBERSHIP_PREFIX) :].decode()


def membership_record(membership: Membership) -> bytes:
    group, score = membership.group, membership.reported
    return orjson.dumps(
        {
            "format": 1,
            "group": None if group is None else [group.group_id, group.at_us],
            "account_id": membership.account_id,
            "reported": None
            if score is None
            else [score.fit, score.engagement, score.total, score.stage.value],
        }
    )


def read_membership(value: bytes) -> Membership:
    data = orjson.loads(value)
    if data.get("format") != 1:
        raise ValueError(f"unknown membership format {data.get('format')!r}")
    group, reported = data["group"], data["reported"]
    return Membership(
        group=None if group is None else GroupCall(str(group[0]), int(group[1])),
        account_id=data["account_id"],
        reported=None
        if reported is None
        else ContactScore(
            fit=reported[0], engagement=reported[1], total=reported[2], stage=Stage(reported[3])
        ),
    )
