"""prescriptions: formulary import runs kept in the database

Revision ID: prescriptions_0003
Revises: visits_0002
Create Date: 2026-11-23 11:17:20

The formulary imports started from the administrators' pages were kept in the memory of
the worker that ran them: with two gunicorn workers, the progress page and its poll
answered 404 whenever the other worker took the request. Each run is now a row (who,
which file, how far, the report), committed with every batch of imported rows.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'prescriptions_0003'
down_revision = 'visits_0002'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('formulary_imports',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('filename', sa.String(length=200), nullable=False),
    sa.Column('started_by', sa.Uuid(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('state', sa.Enum('running', 'done', 'failed', name='importstate', native_enum=False, length=16), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('done', sa.Integer(), nullable=False),
    sa.Column('report', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['started_by'], ['accounts.id'], name=op.f('fk_formulary_imports_started_by_accounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_formulary_imports'))
    )
    with op.batch_alter_table('formulary_imports', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_formulary_imports_started_at'), ['started_at'], unique=False)



def downgrade():
    with op.batch_alter_table('formulary_imports', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_formulary_imports_started_at'))

    op.drop_table('formulary_imports')
