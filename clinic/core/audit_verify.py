"""Verification of the audit log: the full check from entry 1 (`verify`), the incremental
check from the last verified checkpoint on (`verify_incremental`, what the viewer runs), and
what an outsider runs on a receipt with nothing but the log's public key (`check_receipt`).
The design is described in clinic.core.auditlog."""

from __future__ import annotations

import base64
import json
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.engine import Connection

from clinic.core import merkle
from clinic.core.audit import AuditEntry
from clinic.core.auditlog import AuditCheckpoint, StoredNodes, b64, config, row_leaf, tree_size
from clinic.core.db import db, utcnow
from clinic.core.signed_note import Checkpoint, NoteError, Verifier

log = logging.getLogger("clinic.auditlog")

SAMPLE = 32  # older entries re-checked by each incremental verification

_entries = cast(Table, AuditEntry.__table__)
_checkpoints = cast(Table, AuditCheckpoint.__table__)


@dataclass
class Report:
    ok: bool
    entries: int
    first_broken: int | None = None
    reason: str | None = None
    checkpoint_size: int | None = None
    checked: int = 0  # entries whose content was re-hashed this time
    # missing | signature | checkpoint | kept_checkpoint | stored_checkpoint | split_view
    code: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "first_broken": self.first_broken,
            "reason": self.reason,
            "checkpoint_size": self.checkpoint_size,
            "checked": self.checked,
            "code": self.code,
        }


def _stored_checkpoints(conn: Connection, verifier: Verifier, since: int = 0) -> Iterator[Checkpoint | str]:
    """Stored checkpoints above `since`, in order, opened with our key (a str: why not)."""
    for row in conn.execute(select(_checkpoints).where(_checkpoints.c.size > since).order_by(_checkpoints.c.size)):
        try:
            cp = verifier.open(row.note)
        except NoteError as err:
            yield f"stored checkpoint {row.size}: {err}"
            continue
        if cp.size != row.size:
            yield f"stored checkpoint {row.size} says size {cp.size}"
            continue
        yield cp


def _scan(
    conn: Connection,
    verifier: Verifier,
    compact: merkle.CompactRange,
    upto: int | None,
    targets: dict[int, bytes],
    tree: merkle.MemoryTree | None = None,
) -> Report | None:
    """Re-hash entries compact.size+1 … upto (all when None) into `compact`, checking the order,
    each entry's signature, and every root in `targets` (size → root) on the way; the first
    bad entry is named."""
    start = compact.size
    q = select(_entries).where(_entries.c.seq > start)
    if upto is not None:
        q = q.where(_entries.c.seq <= upto)
    rows = conn.execute(q.order_by(_entries.c.seq).execution_options(yield_per=2000))
    try:
        return _scan_rows(conn, verifier, compact, upto, targets, tree, rows, start)
    finally:
        rows.close()


def _scan_rows(
    conn: Connection,
    verifier: Verifier,
    compact: merkle.CompactRange,
    upto: int | None,
    targets: dict[int, bytes],
    tree: merkle.MemoryTree | None,
    rows: Any,
    start: int,
) -> Report | None:
    checked = 0
    for row in rows:
        expected = compact.size + 1
        if row.seq != expected:
            return Report(
                False, compact.size, expected, f"entry {expected} is missing", checked=checked, code="missing"
            )
        leaf = row_leaf(row, row.seq)
        sig = base64.b64decode(row.sig) if row.sig else b""
        if not verifier.entry_ok(row.seq, leaf, sig):
            return Report(
                False,
                compact.size,
                row.seq,
                "content or position does not match the log's signature (changed, inserted or moved)",
                checked=checked,
                code="signature",
            )
        compact.append(leaf)
        if tree is not None:
            tree.append(leaf)
        checked += 1
        want = targets.get(compact.size)
        if want is not None and compact.root() != want:
            return Report(
                False,
                compact.size,
                _first_differing(conn, verifier, start, compact.size),
                f"entries do not make the signed checkpoint of size {compact.size}",
                checked=checked,
                code="checkpoint",
            )
    if upto is not None and compact.size < upto:
        return Report(
            False,
            compact.size,
            compact.size + 1,
            f"entry {compact.size + 1} is missing",
            checked=checked,
            code="missing",
        )
    return None


def _first_differing(conn: Connection, verifier: Verifier, start: int, size: int) -> int:
    # Every signature held yet the root differs: only a key holder could do this. Name the
    # first entry whose stored leaf node differs from its content, else the range's start.
    nodes = StoredNodes(conn)
    for seq in range(start + 1, size + 1):
        row = conn.execute(select(_entries).where(_entries.c.seq == seq)).first()
        try:
            stored = nodes(0, seq - 1)
        except KeyError:
            return seq
        if row is None or row_leaf(row, seq) != stored:
            return seq
    return start + 1


def verify(conn: Connection, verifier: Verifier, kept_note: str | None = None) -> Report:
    """Full check from entry 1: every entry against its signature and the tree it makes,
    every stored checkpoint (and the consistency proofs between successive ones), and the
    checkpoint kept outside the database (`kept_note`) if given."""
    kept: Checkpoint | None = None
    if kept_note is not None:
        try:
            kept = verifier.open(kept_note)
        except NoteError as err:
            return Report(False, 0, None, f"the kept checkpoint: {err}", code="kept_checkpoint")
    targets: dict[int, bytes] = {}
    previous: Checkpoint | None = None
    nodes = StoredNodes(conn)
    for cp in _stored_checkpoints(conn, verifier):
        if isinstance(cp, str):
            return Report(False, 0, None, cp, code="stored_checkpoint")
        targets[cp.size] = cp.root
        if previous is not None:
            try:
                proof = merkle.consistency_proof(nodes, previous.size, cp.size)
                consistent = merkle.verify_consistency(previous.size, cp.size, previous.root, cp.root, proof)
            except KeyError:
                consistent = False
            if not consistent:
                # Named below by the re-hash; the stored tree itself was changed.
                log.warning(
                    "stored checkpoints %d and %d: no consistency proof from the stored tree", previous.size, cp.size
                )
        previous = cp
    if kept is not None:
        if kept.size in targets and targets[kept.size] != kept.root:
            return Report(False, 0, None, f"the log signed two different trees of size {kept.size}", code="split_view")
        targets[kept.size] = kept.root
    compact = merkle.CompactRange()
    size = tree_size(conn)
    bad = _scan(conn, verifier, compact, size, targets)
    if bad is not None:
        bad.checkpoint_size = kept.size if kept else None
        return bad
    if kept is not None and kept.size > compact.size:
        return Report(
            False,
            compact.size,
            compact.size + 1,
            f"entries {compact.size + 1}–{kept.size} of the kept checkpoint are missing",
            code="missing",
        )
    return Report(
        True,
        compact.size,
        checkpoint_size=kept.size if kept else (previous.size if previous else None),
        checked=compact.size,
    )


def verify_incremental(conn: Connection, verifier: Verifier, *, sample: int = SAMPLE) -> Report:
    """From the last verified checkpoint on: the stored right edge of that tree must give its
    signed root, the entries after it are re-hashed and checked against their signatures and
    every later checkpoint, and `sample` random older entries are checked by inclusion proofs.
    On success the last verified point moves on (to the newest checkpoint reached)."""
    verified = int(
        conn.execute(
            select(_checkpoints.c.size)
            .where(_checkpoints.c.verified_at.is_not(None))
            .order_by(_checkpoints.c.size.desc())
            .limit(1)
        ).scalar()
        or 0
    )
    base: Checkpoint | None = None
    if verified:
        row = conn.execute(select(_checkpoints.c.note).where(_checkpoints.c.size == verified)).first()
        try:
            base = verifier.open(row.note) if row else None
        except NoteError:
            base = None
        if base is None or base.size != verified:
            return verify(conn, verifier)  # the anchor is gone or forged: check everything
    nodes = StoredNodes(conn)
    if base is not None:
        try:
            compact = merkle.CompactRange.load(nodes, base.size)
        except KeyError:
            return verify(conn, verifier)
        if compact.root() != base.root:
            return verify(conn, verifier)  # the stored tree was changed: find the entry
    else:
        compact = merkle.CompactRange()
    targets: dict[int, bytes] = {}
    newest = base
    for cp in _stored_checkpoints(conn, verifier, since=verified):
        if isinstance(cp, str):
            return Report(False, verified, None, cp, code="stored_checkpoint")
        targets[cp.size] = cp.root
        newest = cp
    size = tree_size(conn)
    bad = _scan(conn, verifier, compact, size, targets)
    if bad is not None:
        return bad
    checked = compact.size - verified
    if base is not None and base.size:
        for seq in random.sample(range(1, base.size + 1), min(sample, base.size)):
            row = conn.execute(select(_entries).where(_entries.c.seq == seq)).first()
            if row is None:
                return verify(conn, verifier)
            leaf = row_leaf(row, seq)
            try:
                proof = merkle.inclusion_proof(nodes, seq - 1, base.size)
            except KeyError:
                return verify(conn, verifier)
            sig = base64.b64decode(row.sig) if row.sig else b""
            if not verifier.entry_ok(seq, leaf, sig) or not merkle.verify_inclusion(
                leaf, seq - 1, base.size, proof, base.root
            ):
                return verify(conn, verifier)
            checked += 1
    if newest is not None and newest.size > verified:
        conn.execute(update(_checkpoints).where(_checkpoints.c.size == newest.size).values(verified_at=utcnow()))
    return Report(True, compact.size, checkpoint_size=newest.size if newest else None, checked=checked)


def verify_now(kept_note: str | None = None) -> Report:
    """The full check on a connection of its own, with the app's key (CLI, tests)."""
    with db.engine.connect() as conn:
        return verify(conn, config().verifier, kept_note)


def check_receipt(entry: dict[str, Any], proof: dict[str, Any], note: str, vkey: str) -> bool:
    """What an outsider runs, with nothing but the log's public key: the entry as
    GET /audit/entries/{seq} gives it, its inclusion proof (GET /audit/proof/inclusion) and a
    checkpoint they kept. True when the checkpoint is the log's, the entry's canonical bytes
    hash to its leaf, and the proof leads from that leaf to the checkpoint's root."""
    try:
        cp = Verifier.from_vkey(vkey).open(note)
    except NoteError:
        return False
    leaf = merkle.leaf_hash(str(entry["canonical"]).encode())
    if b64(leaf) != entry["leaf_hash"] or json.loads(entry["canonical"]).get("seq") != entry["seq"]:
        return False
    if int(proof["tree_size"]) != cp.size or int(proof["leaf_index"]) != int(entry["seq"]) - 1:
        return False
    hashes = [base64.b64decode(h) for h in proof["hashes"]]
    return merkle.verify_inclusion(leaf, int(proof["leaf_index"]), cp.size, hashes, cp.root)
