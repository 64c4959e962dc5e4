"""RFC 6962 hashing and proofs (clinic/core/merkle.py) against the published test vectors
(Certificate Transparency's reference tree, as transparency-dev/merkle ships them), and the
checkpoint note format (C2SP signed-note / tlog-checkpoint)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from clinic.core import merkle
from clinic.core.signed_note import DASH, Checkpoint, NoteError, Signer, Verifier

# The reference leaves and the tree heads of sizes 0..8.
DATA = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf index, tree size, audit path)
INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
# (first size, second size, consistency proof)
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]


def _reference() -> merkle.MemoryTree:
    tree = merkle.MemoryTree()
    for d in DATA:
        tree.append(merkle.leaf_hash(bytes.fromhex(d)))
    return tree


def test_roots_match_the_reference_tree_heads() -> None:
    tree = _reference()
    leaves = [merkle.leaf_hash(bytes.fromhex(d)) for d in DATA]
    for n in range(9):
        assert tree.root(n).hex() == ROOTS[n]
        assert merkle.root_of(leaves[:n]).hex() == ROOTS[n]
        assert merkle.CompactRange.load(tree.node, n).root().hex() == ROOTS[n]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_inclusion_proofs_match_the_vectors_and_verify(index: int, size: int, path: list[str]) -> None:
    tree = _reference()
    proof = merkle.inclusion_proof(tree.node, index, size)
    assert [p.hex() for p in proof] == path
    leaf = merkle.leaf_hash(bytes.fromhex(DATA[index]))
    root = bytes.fromhex(ROOTS[size])
    assert merkle.verify_inclusion(leaf, index, size, proof, root)
    assert not merkle.verify_inclusion(leaf, index + 1, size, proof, root)
    if size < 8:  # the same path in the next tree needs that tree's root
        assert not merkle.verify_inclusion(leaf, index, size + 1, proof, bytes.fromhex(ROOTS[size + 1]))
    assert not merkle.verify_inclusion(merkle.leaf_hash(b"other"), index, size, proof, root)
    if proof:
        assert not merkle.verify_inclusion(leaf, index, size, proof[:-1], root)
        assert not merkle.verify_inclusion(leaf, index, size, [*proof, proof[0]], root)


@pytest.mark.parametrize(("first", "second", "path"), CONSISTENCY)
def test_consistency_proofs_match_the_vectors_and_verify(first: int, second: int, path: list[str]) -> None:
    tree = _reference()
    proof = merkle.consistency_proof(tree.node, first, second)
    assert [p.hex() for p in proof] == path
    r1, r2 = bytes.fromhex(ROOTS[first]), bytes.fromhex(ROOTS[second])
    assert merkle.verify_consistency(first, second, r1, r2, proof)
    assert not merkle.verify_consistency(first, second, hashlib.sha256(b"x").digest(), r2, proof)
    if proof:
        assert not merkle.verify_consistency(first, second, r1, r2, proof[:-1])
        assert not merkle.verify_consistency(first, second, r1, hashlib.sha256(b"x").digest(), proof)


def test_every_proof_of_every_small_tree_verifies_and_fails_when_changed() -> None:
    tree = merkle.MemoryTree()
    for i in range(40):
        tree.append(merkle.leaf_hash(bytes([i, i * 7 % 256])))
    leaves = [tree.node(0, i) for i in range(40)]
    for n in range(1, 41):
        root = tree.root(n)
        assert root == merkle.root_of(leaves[:n])
        for i in range(n):
            proof = merkle.inclusion_proof(tree.node, i, n)
            assert merkle.verify_inclusion(leaves[i], i, n, proof, root)
            assert not merkle.verify_inclusion(leaves[(i + 1) % n], i, n, proof, root) or n == 1
        for m in range(1, n + 1):
            proof = merkle.consistency_proof(tree.node, m, n)
            assert merkle.verify_consistency(m, n, tree.root(m), root, proof)
            if m < n:
                assert not merkle.verify_consistency(m, n, tree.root(m), tree.root(n - 1), proof)


def test_checkpoint_note_format_sign_and_open() -> None:
    signer = Signer("clinic.example/audit-log", bytes(range(32)))
    root = bytes.fromhex(ROOTS[8])
    note = signer.sign_checkpoint(Checkpoint(signer.name, 8, root))
    lines = note.split("\n")
    assert lines[:4] == ["clinic.example/audit-log", "8", base64.b64encode(root).decode(), ""]
    dash, name, sig = lines[4].split(" ")
    assert dash == DASH and name == signer.name and lines[5] == ""
    raw = base64.b64decode(sig)
    # key id: SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key)[:4]; then the 64-byte Ed25519 signature
    assert raw[:4] == hashlib.sha256(signer.name.encode() + b"\n\x01" + signer.public).digest()[:4] and len(raw) == 68
    verifier = Verifier.from_vkey(signer.verifier().vkey())
    assert verifier.open(note) == Checkpoint(signer.name, 8, root)
    with pytest.raises(NoteError):
        verifier.open(note.replace("\n8\n", "\n9\n"))
    with pytest.raises(NoteError):
        Signer("clinic.example/audit-log", bytes(32)).verifier().open(note)  # another key
    with pytest.raises(NoteError):
        verifier.open(note.split("\n\n")[0] + "\n")


def test_entry_signature_binds_position_and_leaf() -> None:
    signer = Signer("log", bytes(32))
    leaf = merkle.leaf_hash(b"entry")
    sig = signer.sign_entry(5, leaf)
    v = signer.verifier()
    assert v.entry_ok(5, leaf, sig)
    assert not v.entry_ok(6, leaf, sig) and not v.entry_ok(5, merkle.leaf_hash(b"other"), sig)
