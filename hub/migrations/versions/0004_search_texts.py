"""``reads.search_texts``, and on SQLite an FTS5 index over it instead of ``read_candidate_texts`` rows
and the plate B-tree.

A read's plate and likely candidates, space-separated, on the read itself; SQLite indexes them with an
FTS5 table kept by triggers (``hub/textindex.py`` says why), so its ``read_candidate_texts`` rows are
moved into the column and deleted, and ``ix_reads_plate`` dropped (plate searches go through FTS5).
PostgreSQL keeps its rows and its plate index and gains the column (filled the same way). Frozen like
the others: it imports nothing from the hub. A later migration that rebuilds ``reads`` on SQLite
(``batch_alter_table`` in recreate mode) drops the triggers and must make them again.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FTS = "read_texts"
SQLITE_INDEX = (
    # ascii: tokens are runs of letters and digits (plates hold nothing else); detail=none keeps only
    # which rows hold a token (no positions) and columnsize=0 no per-row sizes: the smallest index.
    f"CREATE VIRTUAL TABLE {FTS} USING fts5(search_texts, content='reads', content_rowid='rowid', "
    "tokenize='ascii', detail='none', columnsize=0)",
    f"CREATE TRIGGER reads_texts_insert AFTER INSERT ON reads BEGIN "
    f"INSERT INTO {FTS} (rowid, search_texts) VALUES (new.rowid, new.search_texts); END",
    f"CREATE TRIGGER reads_texts_delete AFTER DELETE ON reads BEGIN "
    f"INSERT INTO {FTS} ({FTS}, rowid, search_texts) VALUES ('delete', old.rowid, old.search_texts); END",
    f"CREATE TRIGGER reads_texts_update AFTER UPDATE OF search_texts ON reads BEGIN "
    f"INSERT INTO {FTS} ({FTS}, rowid, search_texts) VALUES ('delete', old.rowid, old.search_texts); "
    f"INSERT INTO {FTS} (rowid, search_texts) VALUES (new.rowid, new.search_texts); END",
    f"INSERT INTO {FTS} ({FTS}) VALUES ('rebuild')",
)


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.add_column("reads", sa.Column("search_texts", sa.String(length=200), server_default="", nullable=False))
    # The plate first, then the other texts: what the hub writes from now on (search ignores the order).
    others = "group_concat(text, ' ')" if sqlite else "string_agg(text, ' ' ORDER BY text)"
    op.execute(
        f"UPDATE reads SET search_texts = plate || coalesce(' ' || (SELECT {others} FROM read_candidate_texts "
        "WHERE read_candidate_texts.read_id = reads.read_id AND read_candidate_texts.text <> reads.plate), '')"
    )
    if sqlite:
        for statement in SQLITE_INDEX:
            op.execute(statement)
        op.execute("DELETE FROM read_candidate_texts")
        op.drop_index("ix_reads_plate", table_name="reads")  # plates are found through the FTS index


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        rows = bind.execute(sa.text("SELECT read_id, search_texts FROM reads")).all()
        texts = [{"read_id": r, "text": t} for r, joined in rows for t in dict.fromkeys(joined.split())]
        if texts:
            bind.execute(sa.text("INSERT INTO read_candidate_texts (read_id, text) VALUES (:read_id, :text)"), texts)
        for statement in ("reads_texts_update", "reads_texts_delete", "reads_texts_insert"):
            op.execute(f"DROP TRIGGER {statement}")
        op.execute(f"DROP TABLE {FTS}")
        op.create_index("ix_reads_plate", "reads", ["plate"], unique=False)
    with op.batch_alter_table("reads") as batch:
        batch.drop_column("search_texts")
