"""prescriptions: drug catalog, contraindicated interactions, physicians' signing keys

Revision ID: prescriptions_0001
Revises: visits_0001
Create Date: 2026-11-23 05:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'prescriptions_0001'
down_revision = 'visits_0001'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('drugs',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('generic_name', sa.String(length=200), nullable=False),
    sa.Column('generic_name_en', sa.String(length=200), nullable=False),
    sa.Column('form', sa.String(length=64), nullable=False),
    sa.Column('strength', sa.String(length=100), nullable=False),
    sa.Column('route', sa.String(length=64), nullable=False),
    sa.Column('atc_code', sa.String(length=16), nullable=True),
    sa.Column('control_class', sa.String(length=24), nullable=True),
    sa.Column('control_reason', sa.Text(), nullable=False),
    sa.Column('cold_chain', sa.Boolean(), nullable=False),
    sa.Column('ingredients', sa.JSON(), nullable=False),
    sa.Column('indicated_conditions', sa.JSON(), nullable=False),
    sa.Column('search_text', sa.Text(), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_drugs')),
    sa.UniqueConstraint('name', 'form', 'strength', name='uq_drugs_product')
    )
    with op.batch_alter_table('drugs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_drugs_control_class'), ['control_class'], unique=False)
        batch_op.create_index(batch_op.f('ix_drugs_generic_name'), ['generic_name'], unique=False)
        batch_op.create_index(batch_op.f('ix_drugs_generic_name_en'), ['generic_name_en'], unique=False)
        batch_op.create_index(batch_op.f('ix_drugs_name'), ['name'], unique=False)

    op.create_table('drug_interactions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('ingredient_a', sa.String(length=120), nullable=False),
    sa.Column('ingredient_b', sa.String(length=120), nullable=False),
    sa.Column('severity', sa.String(length=24), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_drug_interactions')),
    sa.UniqueConstraint('ingredient_a', 'ingredient_b', name='uq_drug_interactions_pair')
    )
    with op.batch_alter_table('drug_interactions', schema=None) as batch_op:
        batch_op.create_index('ix_drug_interactions_b', ['ingredient_b'], unique=False)

    op.create_table('signing_keys',
    sa.Column('kid', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.Uuid(), nullable=False),
    sa.Column('public_jwk', sa.JSON(), nullable=False),
    sa.Column('private_key', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_signing_keys_account_id_accounts')),
    sa.PrimaryKeyConstraint('kid', name=op.f('pk_signing_keys'))
    )
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_signing_keys_account_id'), ['account_id'], unique=False)


def downgrade():
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_signing_keys_account_id'))
    op.drop_table('signing_keys')
    with op.batch_alter_table('drug_interactions', schema=None) as batch_op:
        batch_op.drop_index('ix_drug_interactions_b')
    op.drop_table('drug_interactions')
    with op.batch_alter_table('drugs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_drugs_name'))
        batch_op.drop_index(batch_op.f('ix_drugs_generic_name_en'))
        batch_op.drop_index(batch_op.f('ix_drugs_generic_name'))
        batch_op.drop_index(batch_op.f('ix_drugs_control_class'))
    op.drop_table('drugs')
