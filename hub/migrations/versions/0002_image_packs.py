"""Image pack files: ``images.pack_offset`` and an index on ``images.path``.

Disk-mode images are appended to pack files (``path`` names the pack, ``pack_offset`` where the bytes
start); rows without an offset keep naming a file of their own, so images stored before this revision
are read as they were. Frozen like 0001: it imports nothing from the hub.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("pack_offset", sa.BigInteger(), nullable=True))
    op.create_index("ix_images_path", "images", ["path"], unique=False)


def downgrade() -> None:
    # Images in pack files cannot be named by a path alone: refuse rather than lose them.
    bind = op.get_bind()
    packed = bind.execute(sa.text("SELECT COUNT(*) FROM images WHERE pack_offset IS NOT NULL")).scalar()
    if packed:
        raise RuntimeError(f"{packed} images live in pack files; downgrading below 0002 would lose them")
    op.drop_index("ix_images_path", table_name="images")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("pack_offset")
