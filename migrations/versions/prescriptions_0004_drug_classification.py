"""prescriptions: a held drug's classification by a person

Revision ID: prescriptions_0004
Revises: audit_0004
Create Date: 2026-12-02 14:10:00

A formulary row whose ingredients the matcher cannot resolve is imported as
`unclassified` and cannot be prescribed until a pharmacist or administrator classifies
it. Who did that, and when, is kept on the drug so that a later import of the same
product does not undo a person's decision (the decision itself is in the audit trail).
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'prescriptions_0004'
down_revision = 'audit_0004'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('drugs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('classified_by', sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column('classified_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_drugs_classified_by_accounts'), 'accounts', ['classified_by'], ['id'])


def downgrade():
    with op.batch_alter_table('drugs', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_drugs_classified_by_accounts'), type_='foreignkey')
        batch_op.drop_column('classified_at')
        batch_op.drop_column('classified_by')
