"""Which leadflow event type a Segment ``track`` call is stored as (segment_events.yaml).

A small file of ingest's own rather than a section of the scoring model: the mapping is
applied once, when the event is accepted, and the type is stored with the event, so it
is a property of ingest's door, not of a model version (a new model re-scores history;
it cannot re-type it). The types it names are the ones the scoring model scores.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

_EVENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")
_UNFIT = re.compile(r"[^a-z0-9_.:/-]+")
_SPACES = re.compile(r"\s+")

DEFAULT_FILE = "segment_events.yaml"


class EventMapError(ValueError):
    """The mapping file cannot be used; the message names the entry and why."""


def name_key(name: str) -> str:
    """How a track name is looked up: case-folded, runs of spaces as one, trimmed."""
    return _SPACES.sub(" ", name).strip().casefold()


def event_type_of_name(name: str) -> str:
    """The event type an unmapped track name is stored as: lower-cased, each run of
    characters an event type cannot hold made ``_``; ``track`` when nothing is left."""
    text = _UNFIT.sub("_", name.strip().lower()).strip("_.:/-")
    return text[:128].rstrip("_.:/-") or "track"


@dataclass(frozen=True)
class EventMap:
    """Track names (by :func:`name_key`) to event types."""

    track: Mapping[str, str]

    def track_type(self, name: str) -> str:
        return self.track.get(name_key(name)) or event_type_of_name(name)


def parse_event_map(text: str, origin: str) -> EventMap:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EventMapError(f"{origin} is not valid YAML: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("track", {}), dict):
        raise EventMapError(f"{origin}: expected a mapping with a 'track' mapping of names")
    track: dict[str, str] = {}
    for name, target in (document.get("track") or {}).items():
        if not isinstance(name, str) or not name.strip():
            raise EventMapError(f"{origin}: track name {name!r} must be a non-empty string")
        if not isinstance(target, str) or not _EVENT_TYPE.fullmatch(target) or len(target) > 128:
            raise EventMapError(f"{origin}: {name!r} maps to {target!r}, not an event type")
        track[name_key(name)] = target
    return EventMap(track)


def load_event_map(path: Path | None) -> EventMap:
    """The mapping at ``path``, or the one shipped with ingest."""
    if path is None:
        text = resources.files("services.ingest").joinpath(DEFAULT_FILE).read_text("utf-8")
        return parse_event_map(text, DEFAULT_FILE)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EventMapError(f"{path} cannot be read: {exc.strerror}") from None
    return parse_event_map(text, str(path))
