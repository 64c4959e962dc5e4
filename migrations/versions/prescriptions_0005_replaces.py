"""prescriptions: a revision names the prescription it replaces; a void keeps its reason

Revision ID: prescriptions_0005
Revises: core_0001
Create Date: 2026-12-02 13:45:00

A prescription the pharmacist returned is revised and signed again: the new one records
which one it replaces, so the pharmacist and the record can follow the chain. A physician
may void a prescription before it is reviewed; the reason is kept with it.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'prescriptions_0005'
down_revision = 'core_0001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('prescriptions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('replaces_id', sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column('void_reason', sa.Text(), nullable=True))
        batch_op.create_index(batch_op.f('ix_prescriptions_replaces_id'), ['replaces_id'], unique=False)
        batch_op.create_foreign_key(
            batch_op.f('fk_prescriptions_replaces_id_prescriptions'), 'prescriptions', ['replaces_id'], ['id']
        )


def downgrade():
    with op.batch_alter_table('prescriptions', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_prescriptions_replaces_id_prescriptions'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_prescriptions_replaces_id'))
        batch_op.drop_column('void_reason')
        batch_op.drop_column('replaces_id')
