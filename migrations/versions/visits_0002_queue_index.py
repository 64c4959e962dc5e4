"""visits: one index for a department's waiting queue instead of two single-column ones

Revision ID: visits_0002
Revises: audit_0003
Create Date: 2026-11-23 09:30:00

The queue asks for (department, status) ordered by created_at; the composite index answers
it in index order, and a lookup by department alone uses its leading column. The separate
department and status indexes go: one index fewer to maintain on every visit written.
"""

from alembic import op


# revision identifiers, used by Alembic.
revision = "visits_0002"
down_revision = "audit_0003"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_visits_queue", "visits", ["department", "status", "created_at"])
    op.drop_index("ix_visits_department", table_name="visits")
    op.drop_index("ix_visits_status", table_name="visits")


def downgrade():
    op.create_index("ix_visits_status", "visits", ["status"])
    op.create_index("ix_visits_department", "visits", ["department"])
    op.drop_index("ix_visits_queue", table_name="visits")
