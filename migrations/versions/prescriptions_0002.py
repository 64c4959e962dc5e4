"""prescriptions: signed prescriptions and their items

Revision ID: prescriptions_0002
Revises: prescriptions_0001
Create Date: 2026-11-23 06:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'prescriptions_0002'
down_revision = 'prescriptions_0001'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('prescriptions',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('visit_id', sa.Uuid(), nullable=False),
    sa.Column('patient_id', sa.Uuid(), nullable=False),
    sa.Column('account_id', sa.Uuid(), nullable=False),
    sa.Column('physician_id', sa.Uuid(), nullable=False),
    sa.Column('status', sa.Enum('pending_review', 'approved', 'rejected', 'returned', 'dispensed', 'out_for_delivery', 'delivered', 'expired', 'cancelled', name='prescriptionstatus', native_enum=False, length=24), nullable=False),
    sa.Column('diagnosis_icd10', sa.String(length=16), nullable=False),
    sa.Column('weight_kg', sa.Numeric(precision=5, scale=2), nullable=True),
    sa.Column('long_term', sa.Boolean(), nullable=False),
    sa.Column('assessment_note', sa.Text(), nullable=True),
    sa.Column('guardian', sa.JSON(), nullable=True),
    sa.Column('accompanying_physician', sa.JSON(), nullable=True),
    sa.Column('content', sa.JSON(), nullable=False),
    sa.Column('jws', sa.Text(), nullable=False),
    sa.Column('kid', sa.String(length=64), nullable=False),
    sa.Column('signed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('dispensed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status_changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_prescriptions_account_id_accounts')),
    sa.ForeignKeyConstraint(['kid'], ['signing_keys.kid'], name=op.f('fk_prescriptions_kid_signing_keys')),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_prescriptions_patient_id_patients')),
    sa.ForeignKeyConstraint(['physician_id'], ['accounts.id'], name=op.f('fk_prescriptions_physician_id_accounts')),
    sa.ForeignKeyConstraint(['visit_id'], ['visits.id'], name=op.f('fk_prescriptions_visit_id_visits')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_prescriptions'))
    )
    with op.batch_alter_table('prescriptions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_prescriptions_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_prescriptions_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_prescriptions_patient_id'), ['patient_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_prescriptions_physician_id'), ['physician_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_prescriptions_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_prescriptions_visit_id'), ['visit_id'], unique=False)

    op.create_table('prescription_items',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('prescription_id', sa.Uuid(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('drug_id', sa.Uuid(), nullable=False),
    sa.Column('drug_name', sa.String(length=200), nullable=False),
    sa.Column('strength', sa.String(length=100), nullable=False),
    sa.Column('dose', sa.Numeric(precision=10, scale=3), nullable=False),
    sa.Column('unit', sa.String(length=16), nullable=False),
    sa.Column('frequency', sa.String(length=32), nullable=False),
    sa.Column('route', sa.String(length=32), nullable=False),
    sa.Column('days', sa.Integer(), nullable=False),
    sa.Column('quantity', sa.Numeric(precision=10, scale=2), nullable=False),
    sa.Column('cold_chain', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['drug_id'], ['drugs.id'], name=op.f('fk_prescription_items_drug_id_drugs')),
    sa.ForeignKeyConstraint(['prescription_id'], ['prescriptions.id'], name=op.f('fk_prescription_items_prescription_id_prescriptions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_prescription_items'))
    )
    with op.batch_alter_table('prescription_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_prescription_items_prescription_id'), ['prescription_id'], unique=False)


def downgrade():
    with op.batch_alter_table('prescription_items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_prescription_items_prescription_id'))
    op.drop_table('prescription_items')
    with op.batch_alter_table('prescriptions', schema=None) as batch_op:
        for name in ('visit_id', 'status', 'physician_id', 'patient_id', 'expires_at', 'account_id'):
            batch_op.drop_index(batch_op.f(f'ix_prescriptions_{name}'))
    op.drop_table('prescriptions')
