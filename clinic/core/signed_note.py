"""Checkpoints as signed notes (C2SP signed-note and tlog-checkpoint), Ed25519 (pure, no I/O).

A checkpoint's text is three lines — origin, tree size (decimal), base64 root hash — then a
blank line and one signature line per signer: "— <name> <base64(key id ‖ signature)>". The key
id is the first 4 bytes of SHA-256(name ‖ "\\n" ‖ 0x01 ‖ public key); the signature covers the
text up to and including the third line's newline. A verifier key is written
"<name>+<hex key id>+<base64(0x01 ‖ public key)>", as transparency-dev tools print it.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ALG_ED25519 = b"\x01"
DASH = "\u2014"


class NoteError(ValueError):
    """The text is not a checkpoint we can read, or no valid signature by our key."""


def key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ALG_ED25519 + public).digest()[:4]


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"


class Signer:
    """The log's key: signs checkpoints and each entry's timestamp (never stored in the DB)."""

    def __init__(self, name: str, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        self.name = name
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = key_id(name, self.public)

    @classmethod
    def from_secret(cls, name: str, secret: str) -> Signer:
        """Any configured secret string: its SHA-256 is the seed."""
        return cls(name, hashlib.sha256(secret.encode()).digest())

    def verifier(self) -> Verifier:
        return Verifier(self.name, self.public)

    def sign_checkpoint(self, cp: Checkpoint) -> str:
        body = cp.body()
        sig = self._key.sign(body.encode())
        return f"{body}\n{DASH} {self.name} {base64.b64encode(self.key_id + sig).decode()}\n"

    def sign_entry(self, seq: int, leaf: bytes) -> bytes:
        return self._key.sign(_entry_message(self.name, seq, leaf))


def _entry_message(origin: str, seq: int, leaf: bytes) -> bytes:
    # What a signed entry timestamp covers: this log, the entry's position and its leaf hash.
    return b"clinic audit entry\x00" + origin.encode() + b"\x00" + struct.pack(">Q", seq) + leaf


class Verifier:
    def __init__(self, name: str, public: bytes) -> None:
        self.name = name
        self.public = public
        self.key_id = key_id(name, public)
        self._key = Ed25519PublicKey.from_public_bytes(public)

    def vkey(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(ALG_ED25519 + self.public).decode()}"

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        try:
            name, hexid, b64 = vkey.strip().split("+", 2)
            raw = base64.b64decode(b64, validate=True)
        except ValueError as exc:
            raise NoteError("not a verifier key") from exc
        if raw[:1] != ALG_ED25519 or len(raw) != 33:
            raise NoteError("not an Ed25519 verifier key")
        v = cls(name, raw[1:])
        if v.key_id.hex() != hexid:
            raise NoteError("the verifier key's id does not match its key")
        return v

    def entry_ok(self, seq: int, leaf: bytes, sig: bytes) -> bool:
        try:
            self._key.verify(sig, _entry_message(self.name, seq, leaf))
        except InvalidSignature:
            return False
        return True

    def open(self, note: str) -> Checkpoint:
        """Parse a signed checkpoint and check our signature on it; NoteError otherwise."""
        body, sep, sigs = note.partition("\n\n")
        if not sep:
            raise NoteError("no blank line between the checkpoint and its signatures")
        body += "\n"
        lines = body.split("\n")
        if len(lines) < 4:
            raise NoteError("a checkpoint has an origin, a size and a root hash")
        origin, size_text, root_text = lines[0], lines[1], lines[2]
        try:
            size = int(size_text)
            root = base64.b64decode(root_text, validate=True)
        except ValueError as exc:
            raise NoteError("bad size or root hash line") from exc
        if size < 0 or size_text != str(size) or len(root) != 32:
            raise NoteError("bad size or root hash line")
        if origin != self.name:
            raise NoteError(f"the checkpoint is of another log ({origin!r})")
        for line in sigs.splitlines():
            parts = line.split(" ")
            if len(parts) != 3 or parts[0] != DASH or parts[1] != self.name:
                continue
            try:
                raw = base64.b64decode(parts[2], validate=True)
            except ValueError:
                continue
            if raw[:4] != self.key_id:
                continue
            try:
                self._key.verify(raw[4:], body.encode())
            except InvalidSignature:
                raise NoteError("the log's signature on the checkpoint is not valid") from None
            return Checkpoint(origin, size, root)
        raise NoteError("the checkpoint carries no signature by this log's key")
