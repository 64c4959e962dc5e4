"""core: answers to requests named by an Idempotency-Key (issue 21 item 6)

Revision ID: core_0001
Revises: prescriptions_0004
Create Date: 2026-12-02 14:00:00

A repeat of a request under the same key gets the stored first answer instead of doing
the work twice (clinic.core.idempotency). Keyed by (account, operation, key).
"""

import sqlalchemy as sa
from alembic import op

import clinic.core.db

# revision identifiers, used by Alembic.
revision = "core_0001"
down_revision = "prescriptions_0004"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "idempotent_requests",
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("operation", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("created_at", clinic.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "operation", "key", name=op.f("pk_idempotent_requests")),
    )
    op.create_index(op.f("ix_idempotent_requests_created_at"), "idempotent_requests", ["created_at"])


def downgrade():
    op.drop_index(op.f("ix_idempotent_requests_created_at"), table_name="idempotent_requests")
    op.drop_table("idempotent_requests")
