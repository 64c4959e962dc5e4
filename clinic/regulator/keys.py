"""Encryption keys at rest, applied to the data (`flask keys rotate|rehash`,
clinic/regulator/cli.py): re-encrypting every encrypted column and file with the newest
FIELD_KEYS key, and recomputing the lookup hashes after LOOKUP_KEY changes. Each batch is
its own unit of work (the CLI commits it), so a long run can be stopped and resumed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import LargeBinary, Table, func, select, type_coerce, update

from clinic.core import audit, crypto
from clinic.core.db import Base, db
from identity import face_services
from identity.models import Account, FaceEnrollment, Patient


@dataclass(frozen=True)
class EncryptedColumns:
    table: Table
    columns: list[str]

    @property
    def name(self) -> str:
        return self.table.name


def encrypted_columns() -> list[EncryptedColumns]:
    """Every column of every model whose type is EncryptedText/EncryptedBytes."""
    out = []
    for table in Base.metadata.sorted_tables:
        cols = [c.name for c in table.columns if isinstance(c.type, crypto.EncryptedText | crypto.EncryptedBytes)]
        if cols:
            out.append(EncryptedColumns(table, cols))
    return out


def count_rows(target: EncryptedColumns) -> int:
    return int(db.session.scalar(select(func.count()).select_from(target.table)) or 0)


def rotate_rows(target: EncryptedColumns, offset: int, limit: int) -> int:
    """Re-encrypt one batch of a table's encrypted columns with the newest key.

    The raw ciphertext is read and written as plain bytes (no decrypt-encrypt round
    trip through the column type); MultiFernet.rotate decrypts with whichever key
    fits and encrypts with the first one."""
    session = db.session()
    table = target.table
    pk = list(table.primary_key.columns)
    raw_cols = [type_coerce(table.c[name], LargeBinary).label(name) for name in target.columns]
    rows = session.execute(select(*pk, *raw_cols).order_by(*pk).offset(offset).limit(limit)).all()
    for row in rows:
        values = {}
        for name in target.columns:
            raw = getattr(row, name)
            if raw is not None:
                values[name] = type_coerce(crypto.rotate(bytes(raw)), LargeBinary)
        if values:
            cond = [c == getattr(row, c.name) for c in pk]
            session.execute(update(table).where(*cond).values(values))
    return len(rows)


def encrypted_files() -> list[Path]:
    """Files encrypted with the field keys: physicians' reference face photos."""
    folder = face_services.face_photo_dir()
    names = db.session.scalars(select(FaceEnrollment.photo_file))
    return [folder / n for n in names if (folder / n).exists()]


def rotate_file(path: Path) -> None:
    data = crypto.rotate(path.read_bytes())
    tmp = path.with_suffix(path.suffix + ".rotating")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def rehash_batch(offset: int, limit: int) -> int:
    """Recompute the lookup hashes (ID numbers, phones) with the current LOOKUP_KEY.

    Needed after LOOKUP_KEY changes: the clear text is decrypted from the encrypted
    columns and hashed again. Phone codes in flight (10 minutes) simply expire."""
    session = db.session()
    patients = session.scalars(select(Patient).order_by(Patient.id).offset(offset).limit(limit)).all()
    for p in patients:
        p.id_number_hash = crypto.lookup_hash(p.id_number)
    accounts = session.scalars(select(Account).order_by(Account.id).offset(offset).limit(limit)).all()
    for a in accounts:
        a.phone_hash = crypto.lookup_hash(a.phone) if a.phone else None
    session.flush()
    return max(len(patients), len(accounts))


def rehash_total() -> int:
    s = db.session
    return max(
        int(s.scalar(select(func.count()).select_from(Patient)) or 0),
        int(s.scalar(select(func.count()).select_from(Account)) or 0),
    )


def record_rotation(rows: dict[str, int], files: int, targets: list[EncryptedColumns]) -> None:
    """The audit entry of a finished rotation: rows per table, files, and the columns covered."""
    audit.record(
        db.session(),
        "keys.rotated",
        detail={"rows": rows, "files": files, "columns": {t.name: t.columns for t in targets}},
    )


def record_rehash(rows: int) -> None:
    """The audit entry of a finished re-hash of the lookup hashes."""
    audit.record(db.session(), "keys.rehashed", detail={"rows": rows})
