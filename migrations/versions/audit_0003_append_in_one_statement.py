"""audit: sha256_hex() so that the database links each entry to the head in one statement

Revision ID: audit_0003
Revises: audit_0002
Create Date: 2026-11-23 09:00:00

The append becomes one INSERT ... SELECT ... FROM audit_head FOR UPDATE: it locks the
head, takes the next sequence number and the last hash, and computes the new entry's
hash in the same statement, from the canonical text the application prepared. The hash
definition is unchanged (sha256 of the previous hash followed by the entry's canonical
JSON, hex), so `verify_chain` recomputes it in Python exactly as before.

PostgreSQL gets sha256_hex(text) here; SQLite gets the same function from the
application when it opens a connection (clinic/core/db.py).
"""

from alembic import op


# revision identifiers, used by Alembic.
revision = "audit_0003"
down_revision = "audit_0002"
branch_labels = None
depends_on = None


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION sha256_hex(text) RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE "
            "AS $$ SELECT encode(sha256(convert_to($1, 'UTF8')), 'hex') $$"
        )


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION sha256_hex(text)")
