"""regulators' interface: regulator account scopes, incidents

Revision ID: regulator_0001
Revises: pharmacy_0002
Create Date: 2026-11-23 06:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'regulator_0001'
down_revision = 'pharmacy_0002'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('regulator_access',
    sa.Column('account_id', sa.Uuid(), nullable=False),
    sa.Column('scopes', sa.JSON(), nullable=False),
    sa.Column('changed_by', sa.String(length=64), nullable=True),
    sa.Column('changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_regulator_access_account_id_accounts')),
    sa.PrimaryKeyConstraint('account_id', name=op.f('pk_regulator_access'))
    )
    op.create_table('incidents',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.Enum('data_security', 'adverse_event', name='incidentkind', native_enum=False, length=24), nullable=False),
    sa.Column('severity', sa.Enum('low', 'medium', 'high', 'critical', name='severity', native_enum=False, length=16), nullable=False),
    sa.Column('what', sa.Text(), nullable=False),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('found_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reported_by', sa.Uuid(), nullable=False),
    sa.Column('reported_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('regulator_notified_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('notification_error', sa.Text(), nullable=True),
    sa.Column('suspension_triggered', sa.Boolean(), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['reported_by'], ['accounts.id'], name=op.f('fk_incidents_reported_by_accounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_incidents'))
    )
    with op.batch_alter_table('incidents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_incidents_kind'), ['kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_incidents_reported_at'), ['reported_at'], unique=False)


def downgrade():
    with op.batch_alter_table('incidents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_incidents_reported_at'))
        batch_op.drop_index(batch_op.f('ix_incidents_kind'))
    op.drop_table('incidents')
    op.drop_table('regulator_access')
