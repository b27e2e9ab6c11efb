"""Sharing only with California public agencies (Civ. Code 1798.90.55(b)), and exports that record themselves.

An export is a zip: ``reads.csv`` or ``reads.json``, the reads' images under ``images/``, and a
``MANIFEST.json`` saying who exported what, for which purpose, and by when it must be destroyed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.access.models import Agency, ShareRequest
from hub.access.search import read_summary
from hub.models import Read

ExportFormat = Literal["csv", "json"]
CSV_FIELDS = ("read_id", "plate", "confidence", "region", "seen_utc", "node", "camera", "latitude", "longitude",
              "direction", "crop_image", "context_image")  # fmt: skip


class AgencyKind(StrEnum):
    CA_PUBLIC = "ca_public"  # the state, a city, county, or an agency or subdivision of them (1798.90.5(f))
    FEDERAL = "federal"
    OUT_OF_STATE = "out_of_state"
    PRIVATE = "private"


class SharingError(Exception):
    pass


def add_agency(session: Session, name: str, kind: str, contact: str, created_by: str, now: datetime) -> Agency:
    cleaned = " ".join(name.split())
    if not cleaned or len(cleaned) > 128:
        raise SharingError("an agency name is 1-128 characters")
    try:
        agency_kind = AgencyKind(kind)
    except ValueError:
        raise SharingError(f"agency kind is one of {', '.join(k.value for k in AgencyKind)}") from None
    if session.execute(select(Agency.id).where(Agency.name == cleaned)).first() is not None:
        raise SharingError(f"agency {cleaned!r} exists")
    agency = Agency(name=cleaned, kind=agency_kind.value, contact=contact.strip(), created_by=created_by,
                    created_utc=now)  # fmt: skip
    session.add(agency)
    session.flush()
    return agency


def get_agency(session: Session, name: str) -> Agency:
    agency = session.execute(select(Agency).where(Agency.name == " ".join(name.split()))).scalar_one_or_none()
    if agency is None:
        raise SharingError(f"no agency {name.strip()!r} in the registry: the administrator adds it first")
    return agency


def sharing_refusal(agency: Agency) -> str | None:
    """Why ALPR information may not go to ``agency`` at all, or None for a California public agency."""
    if agency.kind == AgencyKind.CA_PUBLIC:
        return None
    what = {"federal": "a federal agency", "out_of_state": "an out-of-state agency", "private": "a private entity"}
    return (f"sharing refused: {agency.name} is {what.get(agency.kind, agency.kind)}; Civil Code 1798.90.55(b) "
            "allows sharing ALPR information only with California public agencies")  # fmt: skip


def get_share(session: Session, share_id: int, *, lock: bool = False) -> ShareRequest:
    statement = select(ShareRequest).where(ShareRequest.id == share_id)
    share = session.execute(statement.with_for_update() if lock else statement).scalar_one_or_none()
    if share is None:
        raise SharingError(f"no share request {share_id}")
    return share


@dataclass(frozen=True, slots=True)
class ExportFile:
    data: bytes
    filename: str
    sha256: str
    record_count: int


def build_export(
    reads: Sequence[tuple[Read, str]],
    fmt: ExportFormat,
    manifest: dict[str, Any],
    load_image: Callable[[str], bytes | None],
) -> ExportFile:
    rows = [_row(read, node) for read, node in reads]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("MANIFEST.json", json.dumps(manifest | {"records": len(rows)}, indent=2))
        if fmt == "csv":
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=CSV_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
            archive.writestr("reads.csv", text.getvalue())
        else:
            archive.writestr("reads.json", json.dumps(rows, indent=2))
        written: set[str] = set()
        for read, _node in reads:
            for sha in (read.crop_sha256, read.context_sha256):
                if sha and sha not in written and (data := load_image(sha)) is not None:
                    archive.writestr(f"images/{sha}.jpg", data)
                    written.add(sha)
    data = buffer.getvalue()
    stamp = str(manifest.get("exported_utc", "")).replace(":", "").replace("-", "")[:15]
    return ExportFile(data, f"alpr-export-{stamp}.zip", hashlib.sha256(data).hexdigest(), len(rows))


def _row(read: Read, node: str) -> dict[str, Any]:
    """The search result's fields, with the images as paths inside the archive instead of API links."""
    row = read_summary(read, node, image_url="")
    del row["crop_url"], row["context_url"]
    return row | {
        "crop_image": f"images/{read.crop_sha256}.jpg" if read.crop_sha256 else "",
        "context_image": f"images/{read.context_sha256}.jpg" if read.context_sha256 else "",
    }
