"""jobs: the transactional outbox (outbox_jobs)

Revision ID: jobs_0001
Revises: payments_0001
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'jobs_0001'
down_revision = 'payments_0001'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('outbox_jobs',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('status', sa.Enum('pending', 'running', 'done', 'dead', name='jobstatus', native_enum=False, length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox_jobs'))
    )
    with op.batch_alter_table('outbox_jobs', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_jobs_status_next_attempt_at', ['status', 'next_attempt_at'], unique=False)


def downgrade():
    with op.batch_alter_table('outbox_jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_jobs_status_next_attempt_at')

    op.drop_table('outbox_jobs')

