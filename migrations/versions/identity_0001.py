"""identity: one account of their own per person (real name)

Revision ID: identity_0001
Revises: concurrency_0001
Create Date: 2026-11-23 12:48:10

Registration refused an ID number that already had an account of its own, but only by
reading first: two registrations of the same person at the same moment (two phones) both
passed the check and made two accounts. A partial unique index on the ID number's lookup
hash, for the account holders themselves (relation 'self'), now refuses the second; family
members (a child on both parents' accounts) stay allowed. An existing database with such a
duplicate must have it resolved by hand before this upgrade.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'identity_0001'
down_revision = 'concurrency_0001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.create_index('uq_patients_self_id_number', ['id_number_hash'], unique=True, postgresql_where=sa.text("relation = 'self'"), sqlite_where=sa.text("relation = 'self'"))


def downgrade():
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.drop_index('uq_patients_self_id_number', postgresql_where=sa.text("relation = 'self'"), sqlite_where=sa.text("relation = 'self'"))
