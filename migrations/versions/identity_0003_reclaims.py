"""identity: reclaiming an ID number registered by someone else

Revision ID: identity_0003
Revises: pharmacy_0005
Create Date: 2026-12-02 17:22:23

Whoever knows an ID number could register it first and block its owner (one account of
their own per person). The owner asks for it back with a new phone they confirm by SMS
code; a staff member checks and decides. One row per request, encrypted like the
patients' own columns.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'identity_0003'
down_revision = 'pharmacy_0005'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('identity_reclaims',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('status', sa.Enum('awaiting_code', 'submitted', 'approved', 'rejected', name='reclaimstatus', native_enum=False, length=16), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('id_number', sa.LargeBinary(), nullable=False),
    sa.Column('id_number_hash', sa.String(length=64), nullable=False),
    sa.Column('phone', sa.LargeBinary(), nullable=False),
    sa.Column('phone_hash', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('photo_file', sa.String(length=128), nullable=True),
    sa.Column('photo_media_type', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('code_confirmed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('decided_by', sa.Uuid(), nullable=True),
    sa.Column('reason', sa.String(length=500), nullable=False),
    sa.Column('old_account_id', sa.Uuid(), nullable=True),
    sa.Column('new_account_id', sa.Uuid(), nullable=True),
    sa.Column('patient_id', sa.Uuid(), nullable=True),
    sa.ForeignKeyConstraint(['decided_by'], ['accounts.id'], name=op.f('fk_identity_reclaims_decided_by_accounts')),
    sa.ForeignKeyConstraint(['new_account_id'], ['accounts.id'], name=op.f('fk_identity_reclaims_new_account_id_accounts')),
    sa.ForeignKeyConstraint(['old_account_id'], ['accounts.id'], name=op.f('fk_identity_reclaims_old_account_id_accounts')),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_identity_reclaims_patient_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_identity_reclaims'))
    )
    with op.batch_alter_table('identity_reclaims', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_identity_reclaims_id_number_hash'), ['id_number_hash'], unique=False)
        batch_op.create_index(batch_op.f('ix_identity_reclaims_status'), ['status'], unique=False)



def downgrade():
    with op.batch_alter_table('identity_reclaims', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_identity_reclaims_status'))
        batch_op.drop_index(batch_op.f('ix_identity_reclaims_id_number_hash'))

    op.drop_table('identity_reclaims')
