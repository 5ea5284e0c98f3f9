"""Published scoring models, and the switch records that make one live: to and from bytes.

``leadflow rescore --publish`` first writes a :class:`Publication` to the compacted
``leadflow.models`` topic (key: the version, so one record per version is kept for good,
in the order of publication), then a :class:`Switch` record into every partition of
``leadflow.events``. A worker that reaches a partition's switch record rescores that
partition under the new model in one transaction (docs/architecture.md §5.9); records
after it are scored under the new model. The topic is the model's history (which version
was live when, for ``GET /v1/model``) and where a restarting worker finds the document
of the version its changelog says is live.

Pure: no I/O; the records are read and written by :mod:`services.scoring.model_topic`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError

from services.scoring.model import ModelError, ScoringModel
from shared.events import format_time
from shared.kafka import ConsumedRecord

SWITCH_KEY = b"\x00model-switch"
"""The key of switch records on ``leadflow.events``: no lead id can be it (identifiers
refuse control characters), so a switch is never taken for a lead's event."""

SWITCH_KIND = "model.switch"


@dataclass(frozen=True, slots=True)
class Publication:
    """One model version made live: the record of ``leadflow.models``."""

    version: str
    published_at: datetime | None
    """``None``: the model the workers ran from their file before any publication."""
    model: Mapping[str, Any]
    """The model document, as ``ScoringModel.model_dump(mode="json")`` gives it."""
    previous: str | None = None
    """The version live when this one was published."""

    @classmethod
    def of(
        cls, model: ScoringModel, published_at: datetime | None, previous: str | None = None
    ) -> Publication:
        return cls(model.version, published_at, _document(model), previous)

    def key(self) -> bytes:
        return self.version.encode()

    def value(self) -> bytes:
        return orjson.dumps(
            {
                "version": self.version,
                "published_at": None if self.published_at is None else self.published_at,
                "model": self.model,
                "previous": self.previous,
            },
            option=orjson.OPT_UTC_Z,
        )

    @classmethod
    def read(cls, value: bytes) -> Publication:
        """Raises ``ValueError`` on a record that is not a publication."""
        data = orjson.loads(value)
        try:
            at = data["published_at"]
            return cls(
                version=str(data["version"]),
                published_at=None if at is None else datetime.fromisoformat(at),
                model=dict(data["model"]),
                previous=data.get("previous"),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a model publication: {exc!r}") from None

    def scoring_model(self) -> ScoringModel:
        """The published document, validated as a model file is (:class:`ModelError`)."""
        try:
            return ScoringModel.model_validate(self.model)
        except ValidationError as exc:
            raise ModelError(f"published model {self.version}: {exc}") from None

    def same_model(self, model: ScoringModel) -> bool:
        return dict(self.model) == _document(model)


@dataclass(frozen=True, slots=True)
class Switch:
    """The record, in one partition of ``leadflow.events``, where a version takes over."""

    version: str
    published_at: datetime

    @property
    def event_id(self) -> str:
        """What the rescoring's score updates and stage changes name as their trigger."""
        return f"model-switch:{self.version}"

    @property
    def reason(self) -> str:
        return f"model {self.version}"

    def value(self) -> bytes:
        return orjson.dumps(
            {
                "kind": SWITCH_KIND,
                "version": self.version,
                "published_at": format_time(self.published_at),
            }
        )

    @classmethod
    def read(cls, value: bytes) -> Switch:
        """Raises ``ValueError`` on a value that is not a switch."""
        data = orjson.loads(value)
        if not isinstance(data, dict) or data.get("kind") != SWITCH_KIND:
            raise ValueError("not a model switch record")
        try:
            return cls(str(data["version"]), datetime.fromisoformat(data["published_at"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a model switch record: {exc!r}") from None


def is_switch(record: ConsumedRecord) -> bool:
    """Whether ``record`` of ``leadflow.events`` is a switch (whether or not it is valid)."""
    return record.key == SWITCH_KEY


def switch_of(record: ConsumedRecord) -> Switch | None:
    """The switch a record holds; ``None`` for a lead's record or a malformed switch (the
    latter is refused as an invalid event, like any record that is not one)."""
    if record.key != SWITCH_KEY or record.value is None:
        return None
    try:
        return Switch.read(record.value)
    except ValueError:
        return None


def history(publications: Iterable[Publication]) -> list[dict[str, Any]]:
    """Which version was live when, oldest first: each one live from its publication until
    the next one's (a partition switches when its worker reaches the switch record, so a
    little later)."""
    ordered = list(publications)
    rows: list[dict[str, Any]] = []
    for index, publication in enumerate(ordered):
        following = ordered[index + 1] if index + 1 < len(ordered) else None
        until = None if following is None else following.published_at
        rows.append(
            {
                "version": publication.version,
                "live_from": _time(publication.published_at),
                "live_until": _time(until),
                "previous": publication.previous,
            }
        )
    return rows


def _time(at: datetime | None) -> str | None:
    return None if at is None else format_time(at)


def _document(model: ScoringModel) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(
        orjson.dumps(model.model_dump(mode="json", by_alias=True, exclude_none=True))
    )
    return document
