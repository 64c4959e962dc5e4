"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and their verification (pure, no I/O).

leaf = SHA-256(0x00 ‖ entry), node = SHA-256(0x01 ‖ left ‖ right); a tree of n leaves
splits at the largest power of two below n. The log stores the hashes of the complete
(perfect, aligned) subtrees — node (level, index) covers leaves [index·2^level,
(index+1)·2^level) — and every hash a proof needs is built from those through a
`NodeSource`. The verifiers use only the proof, the leaf hash and a root (RFC 9162 §2.1.3.2
and §2.1.4.2), so an outsider can run them with nothing but a checkpoint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()

# node (level, index) -> hash; raises KeyError when the log does not hold it
NodeSource = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of leaf hashes, by the definition (for tests and small trees)."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(root_of(leaves[:k]), root_of(leaves[k:]))


def range_hash(nodes: NodeSource, lo: int, hi: int) -> bytes:
    """MTH of leaves [lo, hi), where lo is aligned to the split of the range (as in every
    range RFC 6962's recursion visits): complete subtrees come from `nodes`, the ragged right
    edge is combined from them."""
    size = hi - lo
    if size <= 0:
        raise ValueError("empty range")
    if size & (size - 1) == 0 and lo % size == 0:
        return nodes(size.bit_length() - 1, lo // size)
    k = _split(size)
    return node_hash(range_hash(nodes, lo, lo + k), range_hash(nodes, lo + k, hi))


def root_from(nodes: NodeSource, size: int) -> bytes:
    return EMPTY_ROOT if size == 0 else range_hash(nodes, 0, size)


def inclusion_proof(nodes: NodeSource, index: int, size: int) -> list[bytes]:
    """PATH(m, D[n]) of RFC 6962 §2.1.1, leaf first."""
    if not 0 <= index < size:
        raise ValueError("index outside the tree")

    def path(m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = _split(n)
        if m < k:
            return [*path(m, lo, lo + k), range_hash(nodes, lo + k, hi)]
        return [*path(m - k, lo + k, hi), range_hash(nodes, lo, lo + k)]

    return path(index, 0, size)


def consistency_proof(nodes: NodeSource, first: int, second: int) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 6962 §2.1.2."""
    if not 0 < first <= second:
        raise ValueError("need 0 < first <= second")

    def subproof(m: int, lo: int, hi: int, whole: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if whole else [range_hash(nodes, lo, hi)]
        k = _split(n)
        if m <= k:
            return [*subproof(m, lo, lo + k, whole), range_hash(nodes, lo + k, hi)]
        return [*subproof(m - k, lo + k, hi, False), range_hash(nodes, lo, lo + k)]

    return subproof(first, 0, second, True)


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2 (a tree of size 0 is consistent with any; equal sizes need equal roots)."""
    if first == 0:
        return not proof
    if first > second:
        return False
    if first == second:
        return not proof and first_root == second_root
    path = list(proof)
    if first & (first - 1) == 0:  # a power of two: the first root is a node of the proof
        path.insert(0, first_root)
    if not path:
        return False
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root


class CompactRange:
    """The hashes of the complete subtrees covering leaves [0, size): the right edge of the
    tree. Appending a leaf merges equal-sized neighbours and reports every complete subtree
    it made (level, index, hash), which is what the log stores."""

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        self.size = size
        self.hashes = list(hashes)
        if len(self.hashes) != bin(size).count("1"):
            raise ValueError("a compact range has one hash per set bit of its size")

    @classmethod
    def load(cls, nodes: NodeSource, size: int) -> CompactRange:
        """From stored nodes: the perfect subtrees of the binary decomposition of size."""
        hashes, start = [], 0
        for level in reversed(range(size.bit_length())):
            if size >> level & 1:
                hashes.append(nodes(level, start >> level))
                start += 1 << level
        return cls(size, hashes)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        made = [(0, self.size, leaf)]
        h, level, index = leaf, 0, self.size
        self.hashes.append(leaf)
        while index & 1:
            self.hashes.pop()
            left = self.hashes.pop()
            h = node_hash(left, h)
            level, index = level + 1, index >> 1
            self.hashes.append(h)
            made.append((level, index, h))
        self.size += 1
        return made

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        r = self.hashes[-1]
        for h in reversed(self.hashes[:-1]):
            r = node_hash(h, r)
        return r


class MemoryTree:
    """A whole tree in memory (tests, and the verifier that rebuilds a prefix from entries)."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.range = CompactRange()

    @property
    def size(self) -> int:
        return self.range.size

    def append(self, leaf: bytes) -> None:
        for level, index, h in self.range.append(leaf):
            self.nodes[(level, index)] = h

    def node(self, level: int, index: int) -> bytes:
        return self.nodes[(level, index)]

    def root(self, size: int | None = None) -> bytes:
        return root_from(self.node, self.size if size is None else size)
