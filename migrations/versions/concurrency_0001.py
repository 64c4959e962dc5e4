"""row versions for records changed one after another

Revision ID: concurrency_0001
Revises: prescriptions_0003
Create Date: 2026-11-23 12:26:03

Visits, diagnoses, prescriptions and deliveries are changed by several people and jobs
(two physicians of a department, a patient cancelling while a physician accepts, a
partner's callback while the dispatch job runs). Each row now carries a version that
every UPDATE checks and counts up (clinic.core.db.Versioned), so the later of two
simultaneous changes is refused with 409 instead of silently writing over the first.
Existing rows start at version 1.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'concurrency_0001'
down_revision = 'prescriptions_0003'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('version', sa.Integer(), server_default='1', nullable=False))

    with op.batch_alter_table('diagnoses', schema=None) as batch_op:
        batch_op.add_column(sa.Column('version', sa.Integer(), server_default='1', nullable=False))

    with op.batch_alter_table('prescriptions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('version', sa.Integer(), server_default='1', nullable=False))

    with op.batch_alter_table('visits', schema=None) as batch_op:
        batch_op.add_column(sa.Column('version', sa.Integer(), server_default='1', nullable=False))


def downgrade():
    with op.batch_alter_table('visits', schema=None) as batch_op:
        batch_op.drop_column('version')

    with op.batch_alter_table('prescriptions', schema=None) as batch_op:
        batch_op.drop_column('version')

    with op.batch_alter_table('diagnoses', schema=None) as batch_op:
        batch_op.drop_column('version')

    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('version')
