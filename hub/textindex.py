"""Finding reads by any text they could be: the plate or a candidate likely enough to search by.

Every read keeps those texts in ``reads.search_texts`` (space-separated, plate first). What indexes them
depends on the database, because a B-tree keyed by plate text takes each insert at a random place:

- **SQLite**: an FTS5 table over that column (:data:`FTS_TABLE`, external content, ``detail=none``),
  kept by triggers on ``reads`` (migration 0004 makes both). FTS5 buffers a transaction's terms and
  writes them as one sorted segment, merging segments later, so a commit writes a few pages instead
  of one page per text. The B-tree table it replaced (about five random-key entries a read) cost a
  SQLite hub much of its ingest rate once the tables held a few hundred thousand reads
  (``docs/benchmarks.md``).
- **PostgreSQL**: ``read_candidate_texts`` rows, a B-tree on the text (several hub processes write
  there; its rate met the target with them).

The FTS rows are keyed by the rowid of ``reads`` (a table with a text primary key). SQLite keeps rowids
through ``VACUUM`` in practice but does not promise it: after a ``VACUUM`` run
``alpr-hub db check-index --rebuild`` (:func:`rebuild`, then :func:`verify`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Dialect,
    Select,
    bindparam,
    case,
    false,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import InstrumentedAttribute, Session

from hub.models import Read, ReadCandidateText

FTS_TABLE = "read_texts"
"""The SQLite FTS5 table over ``reads.search_texts``; its shadow tables start with this name too."""

_TOKEN = re.compile(r"[A-Z0-9]+")


def join_texts(texts: Iterable[str]) -> str:
    """``reads.search_texts`` for these texts (normalised plates: letters and digits only)."""
    joined = " ".join(texts)
    if not all(_TOKEN.fullmatch(each) for each in joined.split(" ")):
        raise ValueError("search texts are normalised plates: upper-case letters and digits")
    return joined


def split_texts(search_texts: str) -> list[str]:
    return search_texts.split()


def uses_rows(dialect: Dialect) -> bool:
    """Whether this database indexes the texts as ``read_candidate_texts`` rows the hub inserts itself."""
    return dialect.name != "sqlite"


def is_index_table(name: str | None) -> bool:
    """The FTS5 table and its shadow tables: made by the migrations, outside ``hub.models``' metadata."""
    return name is not None and (name == FTS_TABLE or name.startswith(f"{FTS_TABLE}_"))


def include_name(name: str | None, type_: str, _parents: object) -> bool:
    """Alembic's ``include_name``: schema comparisons leave out the FTS5 tables (migration 0004 makes them)."""
    return not (type_ == "table" and is_index_table(name))


def matching_read_ids(session: Session, texts: Iterable[str]) -> Select[Any]:
    """The ids of the reads that could be any of ``texts`` (their plate or one of their likely candidates)."""
    wanted = sorted(set(texts))
    if not wanted:
        return select(Read.read_id).where(false())
    join_texts(wanted)  # refuses anything but plate characters (on SQLite they become the query's syntax)
    if not _on_sqlite(session):
        return select(ReadCandidateText.read_id).where(ReadCandidateText.text.in_(wanted))
    return select(Read.read_id).where(_fts_match(" OR ".join(f'"{each}"' for each in wanted)))


POSTGRESQL_ONLY_INDEXES = frozenset({"ix_reads_plate"})
"""Indexes SQLite goes without: its FTS5 index finds reads by plate and plate prefix."""


def include_object_on_sqlite(_object: object, name: str | None, type_: str, _reflected: bool, _compare: object) -> bool:
    """Alembic's ``include_object`` on SQLite: the indexes made on PostgreSQL only (``ddl_if``) are not
    missing there."""
    return not (type_ == "index" and name in POSTGRESQL_ONLY_INDEXES)


def plate_lookup(session: Session, plate: str, *, prefix: bool = False) -> list[ColumnElement[bool]]:
    """What lets the database find reads of ``plate`` (or plates starting with it) fast, beside the caller's
    own conditions on ``reads.plate``: nothing on PostgreSQL (``ix_reads_plate`` serves those conditions);
    on SQLite, the reads whose texts (plate or candidate) include one like it, from the FTS5 index."""
    if not _on_sqlite(session):
        return []
    join_texts([plate])
    return [_fts_match(f'"{plate}" *' if prefix else f'"{plate}"')]


def _on_sqlite(session: Session) -> bool:
    return not uses_rows(session.get_bind().dialect)


def _fts_match(query: str) -> ColumnElement[bool]:
    """The reads whose texts match an FTS5 query (built here from checked plate texts only)."""
    rowids = text(f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :fts_query").bindparams(
        bindparam("fts_query", query, unique=True)  # unique: a search may hold more than one
    )
    return literal_column("reads.rowid").in_(rowids)


def add_text(session: Session, read: Read, plate: str) -> None:
    """Make ``read`` findable by ``plate`` too (a corrected plate)."""
    if plate in split_texts(read.search_texts):
        return
    read.search_texts = join_texts([*split_texts(read.search_texts), plate])  # the SQLite triggers re-index it
    if not _on_sqlite(session):
        session.add(ReadCandidateText(read_id=read.read_id, text=plate))


def text_count(search_texts: ColumnElement[str] | InstrumentedAttribute[str]) -> ColumnElement[int]:
    """How many texts a ``search_texts`` value holds, in SQL (both databases have these functions)."""
    spaces = func.length(search_texts) - func.length(func.replace(search_texts, " ", ""))
    return func.coalesce(func.sum(case((func.length(search_texts) == 0, 0), else_=spaces + 1)), 0)


def rebuild(connection: Connection) -> None:
    """Rebuild SQLite's FTS index from ``reads.search_texts`` (after a ``VACUUM``); nothing on PostgreSQL."""
    if not uses_rows(connection.dialect):
        connection.exec_driver_sql(f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}) VALUES ('rebuild')")


def verify(session: Session) -> int:
    """How many texts the reads hold; raises ``TextIndexError`` if the index does not hold exactly them."""
    expected = int(session.scalar(select(text_count(Read.search_texts))) or 0)
    if _on_sqlite(session):
        try:  # rank 1: check the index against the content table (reads), not only its own structure
            session.execute(text(f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}, rank) VALUES ('integrity-check', 1)"))
        except DatabaseError as error:
            raise TextIndexError(f"{FTS_TABLE} does not match reads.search_texts: rebuild it") from error
    else:
        rows = int(session.scalar(select(func.count()).select_from(ReadCandidateText)) or 0)
        if rows != expected:
            raise TextIndexError(f"read_candidate_texts holds {rows} texts, the reads {expected}")
    return expected


class TextIndexError(RuntimeError):  # a RuntimeError: the CLI reports it in one line
    """The text index and ``reads.search_texts`` disagree."""
