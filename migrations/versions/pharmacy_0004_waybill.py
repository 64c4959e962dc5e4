"""pharmacy: the partner's waybill number on deliveries and their events

Partner callbacks may carry an optional `waybill_no` (运单号); the delivery keeps the
current partner's, each event the one it came with (the patient's tracking timeline).

Revision ID: pharmacy_0004
Revises: identity_0002
Create Date: 2026-12-02 17:40:00

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "pharmacy_0004"
down_revision = "identity_0002"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("waybill_no", sa.String(length=40), nullable=True))
    with op.batch_alter_table("delivery_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("waybill_no", sa.String(length=40), nullable=True))


def downgrade():
    with op.batch_alter_table("delivery_events", schema=None) as batch_op:
        batch_op.drop_column("waybill_no")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("waybill_no")
