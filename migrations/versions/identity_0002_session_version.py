"""identity: the account's session version ends every session at once

Revision ID: identity_0002
Revises: patients_0001
Create Date: 2026-12-02 14:30:00

Page sessions were signed cookies alone: one captured before logout kept working for up to
31 days. A page session and an API token now carry the account's session version; logout,
a password change and deactivation raise it, and every older session and token stops
working.
"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "identity_0002"
down_revision = "patients_0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("session_version", sa.Integer(), server_default="0", nullable=False))


def downgrade():
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("session_version")
