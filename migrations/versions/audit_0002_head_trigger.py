"""audit: the chain head follows each inserted entry (a trigger), one statement fewer per append

Revision ID: audit_0002
Revises: regulator_0001
Create Date: 2026-11-23 07:00:00

The application still locks the head first (UPDATE ... RETURNING) and computes each
entry's hash from the head's last hash; the trigger then moves the head to the entry just
inserted, in the same statement, whoever inserts it (never backwards: rows of one
multi-row INSERT may fire in any order).
"""

from alembic import op


# revision identifiers, used by Alembic.
revision = "audit_0002"
down_revision = "regulator_0001"
branch_labels = None
depends_on = None


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION audit_head_follow() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                UPDATE audit_head SET last_seq = NEW.seq, last_hash = NEW.hash WHERE id = 1 AND last_seq < NEW.seq;
                RETURN NULL;
            END
            $$
            """
        )
        op.execute(
            "CREATE TRIGGER audit_entries_move_head AFTER INSERT ON audit_entries "
            "FOR EACH ROW EXECUTE FUNCTION audit_head_follow()"
        )
    else:
        op.execute(
            "CREATE TRIGGER audit_entries_move_head AFTER INSERT ON audit_entries FOR EACH ROW BEGIN "
            "UPDATE audit_head SET last_seq = NEW.seq, last_hash = NEW.hash WHERE id = 1 AND last_seq < NEW.seq; END"
        )


def downgrade():
    op.execute(
        "DROP TRIGGER audit_entries_move_head"
        + (" ON audit_entries" if op.get_bind().dialect.name == "postgresql" else "")
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION audit_head_follow()")
