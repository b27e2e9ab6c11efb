"""Searching reads: exact, wildcard and look-alike plates, time range, node and camera, radius around a place.

Every value reaches SQL as a bound parameter; plates are normalised to ``A-Z0-9`` (wildcards ``*`` and
``?`` aside) before they get near a ``LIKE``, so no search field can change a statement's meaning.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session

from edge.recognition.formats import lookalike_variants, normalize_plate
from hub import textindex
from hub.models import Hit, Node, Read
from hub.storage import prefix_upper_bound

MAX_PAGE_SIZE = 100
MAX_RADIUS_M = 50_000.0
MAX_ID_LIST = 20_000
"""Reads matching a plate or look-alike set that are passed to the main query as a list of ids."""
_M_PER_DEG_LAT = 110_574.0
_M_PER_DEG_LON_EQUATOR = 111_320.0


class Place(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    radius_m: float = Field(gt=0, le=MAX_RADIUS_M)


class SearchQuery(BaseModel):
    """One search; at least one criterion. Plates are compared normalised (``7abc-123`` is ``7ABC123``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    plate: str | None = Field(default=None, max_length=16, description="exact plate (or any of its candidates)")
    pattern: str | None = Field(default=None, max_length=16, description="wildcards: * any run, ? one character")
    fuzzy: str | None = Field(default=None, max_length=16, description="plate allowing one look-alike character")
    from_utc: datetime | None = None
    to_utc: datetime | None = None
    node: str | None = Field(default=None, max_length=64)
    camera: str | None = Field(default=None, max_length=64)
    near: Place | None = None
    page: int = Field(default=1, ge=1, le=10_000)
    page_size: int = Field(default=25, ge=1, le=MAX_PAGE_SIZE)

    @field_validator("plate", "fuzzy")
    @classmethod
    def _plate(cls, value: str | None) -> str | None:
        if value is None:
            return None
        plate = normalize_plate(value)
        if not 1 <= len(plate) <= 10:
            raise ValueError("a plate is 1-10 letters and digits")
        return plate

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is None:
            return None
        pattern = "".join(c for c in value.upper() if c.isascii() and (c.isalnum() or c in "*?"))
        if sum(c.isalnum() for c in pattern) < 2:
            raise ValueError("a wildcard pattern needs at least 2 letters or digits")
        return pattern

    @field_validator("from_utc", "to_utc")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.utcoffset() is None:
            raise ValueError("give times with a time zone (UTC: ...Z)")
        return value

    @model_validator(mode="after")
    def _narrow(self) -> SearchQuery:
        if not any((self.plate, self.pattern, self.fuzzy, self.node, self.camera, self.near)):
            raise ValueError("name a plate, pattern, node, camera or place: searching every read is not allowed")
        if self.from_utc and self.to_utc and self.from_utc > self.to_utc:
            raise ValueError("from_utc is after to_utc")
        return self

    def data_elements(self) -> dict[str, Any]:
        """What the access log records as "the data elements used to query" (429.10 (2))."""
        return self.model_dump(mode="json", exclude_none=True, exclude={"page", "page_size"})


def _conditions(session: Session, query: SearchQuery) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if query.plate:
        conditions.append(_any_text_in(session, {query.plate}))
    if query.fuzzy:
        conditions.append(_any_text_in(session, lookalike_variants(query.fuzzy, 1)))
    if query.pattern:
        conditions.extend(_pattern(session, query.pattern))
    if query.from_utc:
        conditions.append(Read.best_utc >= query.from_utc)
    if query.to_utc:
        conditions.append(Read.best_utc <= query.to_utc)
    if query.node:
        conditions.append(Node.name == query.node)
    if query.camera:
        conditions.append(Read.camera_id == query.camera)
    if query.near:
        conditions.append(_within(query.near))
    return conditions


def _any_text_in(session: Session, texts: set[str]) -> ColumnElement[bool]:
    """Reads that could be any of ``texts``: their plate or one of their candidates.

    The text index holds every text a read could be, its plate included (hub.textindex), so one
    indexed lookup there finds both. The ids are fetched first and handed to the main query as a list:
    as a subquery, PostgreSQL's planner tends to walk the whole time index newest-first looking for the
    few matching rows (seconds over a million reads) instead of starting from them.
    """
    # No DISTINCT or LIMIT here: either invites the planner to walk the whole (read_id, text) key in order.
    matching = textindex.matching_read_ids(session, texts)
    ids = set(session.execute(matching).scalars())
    return Read.read_id.in_(matching) if len(ids) > MAX_ID_LIST else Read.read_id.in_(sorted(ids))


def _pattern(session: Session, pattern: str) -> list[ColumnElement[bool]]:
    """``LIKE`` for the pattern, plus a range on its literal prefix so the plate index does the work
    (on SQLite, the text index: ``textindex.plate_lookup``)."""
    conditions: list[ColumnElement[bool]] = [Read.plate.like(pattern.replace("*", "%").replace("?", "_"))]
    prefix = re.split(r"[*?]", pattern, maxsplit=1)[0]
    if prefix:
        conditions.extend(textindex.plate_lookup(session, prefix, prefix=True))
        conditions.append(Read.plate >= prefix)
        upper = prefix_upper_bound(prefix)
        if upper is not None:
            conditions.append(Read.plate < upper)
    return conditions


def _within(place: Place) -> ColumnElement[bool]:
    """Inside the circle, by a local flat-earth distance (good to well under 1% at 50 km) in plain SQL."""
    m_per_deg_lon = _M_PER_DEG_LON_EQUATOR * max(math.cos(math.radians(place.latitude)), 1e-6)
    dlat = place.radius_m / _M_PER_DEG_LAT
    dlon = place.radius_m / m_per_deg_lon
    dy = (Read.latitude - place.latitude) * _M_PER_DEG_LAT
    dx = (Read.longitude - place.longitude) * m_per_deg_lon
    return and_(
        Read.latitude.between(place.latitude - dlat, place.latitude + dlat),  # the box uses ix_reads_lat_lon
        Read.longitude.between(place.longitude - dlon, place.longitude + dlon),
        dx * dx + dy * dy <= place.radius_m * place.radius_m,
    )


def search_reads(session: Session, query: SearchQuery) -> tuple[list[tuple[Read, str]], int]:
    """One page of matching reads (newest first) with their node names, and the total number of matches."""
    base = select(Read, Node.name).join(Node, Node.id == Read.node_id).where(*_conditions(session, query))
    total = session.execute(select(func.count()).select_from(base.subquery())).scalar_one()
    rows = session.execute(
        base.order_by(Read.best_utc.desc(), Read.read_id.desc())
        .limit(query.page_size)
        .offset((query.page - 1) * query.page_size)
    ).all()
    return [(row[0], row[1]) for row in rows], int(total)


def read_summary(read: Read, node_name: str, image_url: str) -> dict[str, Any]:
    return {
        "read_id": read.read_id,
        "plate": read.plate,
        "confidence": round(read.confidence, 4),
        "region": read.region,
        "seen_utc": read.best_utc.isoformat(),
        "node": node_name,
        "camera": read.camera_id,
        "latitude": read.latitude,
        "longitude": read.longitude,
        "direction": read.direction,
        "crop_url": f"{image_url}/{read.crop_sha256}" if read.crop_sha256 else None,
        "context_url": f"{image_url}/{read.context_sha256}" if read.context_sha256 else None,
    }


def read_detail(session: Session, read: Read, node_name: str, image_url: str) -> dict[str, Any]:
    hits = session.execute(select(Hit).where(Hit.read_id == read.read_id).order_by(Hit.id)).scalars()
    return read_summary(read, node_name, image_url) | {
        "candidates": read.candidates,
        "char_confidences": read.char_confidences,
        "first_seen_utc": read.first_seen_utc.isoformat(),
        "last_seen_utc": read.last_seen_utc.isoformat(),
        "received_utc": read.received_utc.isoformat(),
        "time_source": read.time_source,
        "clock_suspect": read.clock_suspect,
        "gps": read.gps,
        "box": read.box,
        "hits": [
            {
                "hit_id": h.id,
                "match_type": h.match_type,
                "disposition": h.disposition,
                "created_utc": h.created_utc.isoformat(),
            }
            for h in hits
        ],  # fmt: skip
    }
