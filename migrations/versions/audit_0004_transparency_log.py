"""audit: a transparency log (lock-free append, sequencer, RFC 6962 tree, signed checkpoints)

Revision ID: audit_0004
Revises: family_doctor_0001
Create Date: 2026-12-02 13:40:00

The hash chain's head row (audit_head), its trigger (audit_0002) and sha256_hex
(audit_0003) go: every audited write locked that row until its commit. Writers now insert
into audit_pending; the sequencer (clinic/core/auditlog.py) gives entries their seq, their
leaf in the Merkle tree (audit_nodes), a signature on (seq, leaf) and signed checkpoints
(audit_checkpoints).

Every existing entry is kept with its seq. Before the chain's hashes are dropped, the chain
is checked here once, the way `audit verify` did (each hash over the one before and the
entry); the result and the chain's last hash are recorded in a new entry,
`audit.chain_migrated`, which the sequencer appends after the old ones. The first sequencer
pass integrates the old entries (in seq order) into the tree and signs them, so from then on
they are checked like every other: the old chain check is replaced by the tree's, against
a checkpoint kept outside the database. Whoever kept the chain's last hash (an export, the
regulator's AuditEvent feed) can match it against that entry.
"""

import hashlib
import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = "audit_0004"
down_revision = "family_doctor_0001"
branch_labels = None
depends_on = None

GENESIS = "0" * 64
CONTENT = ("seq", "at", "actor_id", "actor_role", "action", "subject_type", "subject_id", "detail", "client_ip")


def _aware(at):
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _chain_hash(prev, row):
    content = {name: getattr(row, name) for name in CONTENT}
    content["at"] = _aware(content["at"]).isoformat()
    text = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256((prev + text).encode()).hexdigest()


def _check_old_chain(bind):
    entries = sa.table(
        "audit_entries",
        *(sa.column(name) for name in CONTENT if name not in ("at", "detail")),
        sa.column("at", sa.DateTime(timezone=True)),
        sa.column("detail", sa.JSON()),
        sa.column("prev_hash", sa.String),
        sa.column("hash", sa.String),
    )
    prev, expected, count = GENESIS, 1, 0
    result = {"chain_ok": True}
    for row in bind.execute(sa.select(entries).order_by(entries.c.seq)):
        count += 1
        if result["chain_ok"]:
            reason = None
            if row.seq != expected:
                reason = f"entry {expected} is missing"
            elif row.prev_hash != prev:
                reason = "previous-hash link does not match"
            elif _chain_hash(prev, row) != row.hash:
                reason = "content does not match its hash"
            if reason:
                result.update(chain_ok=False, first_broken=expected if row.seq != expected else row.seq, reason=reason)
        prev, expected = row.hash, row.seq + 1
    result.update(entries=count, last_hash=prev)
    return result


def upgrade():
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    old_chain = _check_old_chain(bind)

    op.execute("DROP TRIGGER audit_entries_move_head" + (" ON audit_entries" if postgres else ""))
    if postgres:
        op.execute("DROP FUNCTION audit_head_follow()")
        op.execute("DROP FUNCTION sha256_hex(text)")
    op.drop_table("audit_head")
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.drop_column("prev_hash")
        batch_op.drop_column("hash")
        batch_op.add_column(sa.Column("sig", sa.String(length=88), nullable=True))

    op.create_table(
        "audit_pending",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_id", sa.String(length=64), nullable=True),
        sa.Column("actor_role", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=80), nullable=False),
        sa.Column("subject_type", sa.String(length=64), nullable=True),
        sa.Column("subject_id", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("client_ip", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_pending")),
    )
    op.create_table(
        "audit_nodes",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name=op.f("pk_audit_nodes")),
    )
    op.create_table(
        "audit_log_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("frontier", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log_state")),
    )
    op.bulk_insert(
        sa.table("audit_log_state", sa.column("id", sa.Integer), sa.column("size", sa.Integer), sa.column("frontier", sa.JSON)),
        [{"id": 1, "size": 0, "frontier": []}],
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("size", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("root", sa.String(length=44), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("size", name=op.f("pk_audit_checkpoints")),
    )

    if old_chain["entries"]:
        op.bulk_insert(
            sa.table(
                "audit_pending",
                sa.column("at", sa.DateTime(timezone=True)),
                sa.column("actor_role", sa.String),
                sa.column("action", sa.String),
                sa.column("subject_type", sa.String),
                sa.column("detail", sa.JSON),
            ),
            [
                {
                    "at": datetime.now(UTC),
                    "actor_role": "system",
                    "action": "audit.chain_migrated",
                    "subject_type": "audit_log",
                    "detail": old_chain,
                }
            ],
        )


def downgrade():
    # Back to the hash chain: pending entries are appended after the sequenced ones (in their
    # order), then every entry's chain hash is recomputed; the tree and checkpoints go.
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.drop_column("sig")
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
    cols = [name for name in CONTENT if name != "seq"]
    top = bind.execute(sa.text("SELECT COALESCE(MAX(seq), 0) FROM audit_entries")).scalar()
    pending = bind.execute(sa.text(f"SELECT {', '.join(cols)} FROM audit_pending ORDER BY id")).all()
    entries = sa.table(
        "audit_entries",
        *(sa.column(name) for name in CONTENT if name not in ("at", "detail")),
        sa.column("at", sa.DateTime(timezone=True)),
        sa.column("detail", sa.JSON()),
        sa.column("prev_hash", sa.String),
        sa.column("hash", sa.String),
    )
    for i, row in enumerate(pending, start=1):
        detail = row.detail if isinstance(row.detail, dict) else json.loads(row.detail)
        bind.execute(sa.insert(entries).values(seq=top + i, **{**row._asdict(), "detail": detail}))
    prev, last = GENESIS, 0
    for row in bind.execute(sa.select(entries).order_by(entries.c.seq)).all():
        h = _chain_hash(prev, row)
        bind.execute(sa.update(entries).where(entries.c.seq == row.seq).values(prev_hash=prev, hash=h))
        prev, last = h, row.seq
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("hash", existing_type=sa.String(length=64), nullable=False)
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_log_state")
    op.drop_table("audit_nodes")
    op.drop_table("audit_pending")
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    op.bulk_insert(
        sa.table("audit_head", sa.column("id", sa.Integer), sa.column("last_seq", sa.Integer), sa.column("last_hash", sa.String)),
        [{"id": 1, "last_seq": last, "last_hash": prev}],
    )
    if postgres:
        op.execute(
            "CREATE FUNCTION sha256_hex(text) RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE "
            "AS $$ SELECT encode(sha256(convert_to($1, 'UTF8')), 'hex') $$"
        )
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
