"""An index on ``hits (disposition, id)``: the open hits, which every dispatch hit board asks for every
few seconds, without a scan of a year of settled hits.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_hits_disposition", "hits", ["disposition", "id"])


def downgrade() -> None:
    op.drop_index("ix_hits_disposition", table_name="hits")
