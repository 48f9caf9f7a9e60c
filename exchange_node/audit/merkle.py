"""RFC 9162 Merkle tree math: hashes, roots, inclusion and consistency proofs.

Pure and sans-I/O. SHA-256 with domain separation (RFC 9162 §2.1.1): a leaf hash is
``SHA-256(0x00 || leaf bytes)``, an interior node ``SHA-256(0x01 || left || right)``, the
empty tree's root ``SHA-256("")``.

Proof generation never needs the whole tree: it asks a *hash source*, a callable
``subtree_hash(start, end) -> bytes`` returning MTH(D[start:end]). The algorithms below
only ever ask for ranges of two shapes, which lets a store answer each from O(log n)
stored nodes:

- a complete subtree: ``end - start`` is a power of two and ``start`` is a multiple of it;
- a right edge: ``end`` is the tree size and ``start`` is a multiple of a power of two
  that is at least ``end - start`` (that is, ``start`` begins a complete subtree that the
  tree has only partly filled).

Verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 exactly and agrees with the
transparency-dev/merkle verifier on the published vectors. Every verification failure
raises :class:`ProofError` (a :class:`~exchange_node.errors.ValidationError`) with a
stable code; a function that returns has verified.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from exchange_node.errors import ValidationError

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()

SubtreeHash = Callable[[int, int], bytes]
"""``subtree_hash(start, end)`` returns MTH(D[start:end]) for ``0 <= start < end``."""


class ProofError(ValidationError):
    """A proof, root or hash that does not verify. ``code`` says which check failed."""


def leaf_hash(data: bytes) -> bytes:
    """The RFC 9162 leaf hash of one leaf's exact bytes."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 9162 interior node hash of two child hashes."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(hashes: Iterable[bytes]) -> bytes:
    """MTH over leaves given by their leaf hashes, in O(n) time and O(log n) memory."""
    frontier = Frontier()
    for h in hashes:
        frontier.push(h)
    return frontier.root()


def root(leaves: Iterable[bytes]) -> bytes:
    """MTH over leaves given by their bytes (RFC 9162 §2.1.1)."""
    return root_from_leaf_hashes(leaf_hash(d) for d in leaves)


class Frontier:
    """The complete subtrees that make up a tree of ``size`` leaves (its compact range).

    For a size with binary digits ``2^a + 2^b + ...`` (a > b > ...), the tree is the
    complete subtree of the first ``2^a`` leaves, then of the next ``2^b``, and so on;
    ``hashes`` holds their roots, largest first. Appending a leaf merges equal-sized
    subtrees like a binary counter, so each push costs O(1) amortised and reports the
    complete subtrees it created (a store keeps them to answer proofs).
    """

    __slots__ = ("size", "hashes")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != size.bit_count():
            raise ValueError("a frontier holds one hash per set bit of its size")
        self.size = size
        self.hashes = list(hashes)

    def copy(self) -> Frontier:
        return Frontier(self.size, self.hashes)

    def push(self, h: bytes) -> list[tuple[int, int, bytes]]:
        """Append one leaf hash; return the new complete subtrees above the leaf level.

        Each is ``(level, index, hash)``: the subtree of leaves
        ``[index * 2^level, (index + 1) * 2^level)``.
        """
        index = self.size
        hashes = self.hashes
        created: list[tuple[int, int, bytes]] = []
        level = 0
        while index & 1:
            h = node_hash(hashes.pop(), h)
            index >>= 1
            level += 1
            created.append((level, index, h))
        hashes.append(h)
        self.size += 1
        return created

    def root(self) -> bytes:
        """MTH of the tree this frontier describes."""
        if not self.hashes:
            return EMPTY_ROOT
        it = reversed(self.hashes)
        r = next(it)
        for h in it:
            r = node_hash(h, r)
        return r


def frontier_nodes(size: int) -> list[tuple[int, int]]:
    """``(level, index)`` of the complete subtrees making up a tree of ``size`` leaves."""
    nodes = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            nodes.append((level, start >> level))
            start += 1 << level
    return nodes


def range_nodes(start: int, end: int) -> list[tuple[int, int]]:
    """Complete subtrees, largest first, covering ``[start, end)`` for a right edge.

    ``start`` must be a multiple of a power of two at least ``end - start`` (the only
    incomplete ranges proofs ask for); the MTH of the range is these subtrees' hashes
    folded from the right.
    """
    nodes = []
    n = end - start
    for level in range(n.bit_length() - 1, -1, -1):
        if n >> level & 1:
            if start % (1 << level):
                raise ValueError(f"[{start}, {end}) is not a subtree or right edge")
            nodes.append((level, start >> level))
            start += 1 << level
    return nodes


def fold_right(hashes: Sequence[bytes]) -> bytes:
    """Combine subtree hashes (largest first) into the root of their concatenation."""
    r = hashes[-1]
    for h in reversed(hashes[:-1]):
        r = node_hash(h, r)
    return r


def inclusion_proof(index: int, size: int, subtree_hash: SubtreeHash) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 §2.1.3.1, leaf end first.

    Raises ``ValueError`` unless ``0 <= index < size``.
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            path.append(subtree_hash(start + k, end))
            end = start + k
        else:
            path.append(subtree_hash(start, start + k))
            start += k
    path.reverse()
    return path


def consistency_proof(old_size: int, new_size: int, subtree_hash: SubtreeHash) -> list[bytes]:
    """PROOF(old_size, D[new_size]) of RFC 9162 §2.1.4.1.

    Raises ``ValueError`` unless ``0 < old_size <= new_size`` (a proof from the empty tree
    proves nothing and RFC 9162 defines none).
    """
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    path: list[bytes] = []
    # Descend through D[start:end]; m is the old size relative to start.
    start, end, m, complete = 0, new_size, old_size, True
    while True:
        if m == end - start:
            if not complete:
                path.append(subtree_hash(start, end))
            break
        k = split_point(end - start)
        if m <= k:
            path.append(subtree_hash(start + k, end))
            end = start + k
        else:
            path.append(subtree_hash(start, start + k))
            start += k
            m -= k
            complete = False
    path.reverse()
    return path


def _check_hash(value: bytes, field: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(
            "hash_size_invalid", f"{field} is {len(value)} bytes; SHA-256 hashes are 32", field
        )


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root a valid inclusion proof implies (RFC 9162 §2.1.3.2, steps 1-5).

    ``leaf`` is the leaf *hash*. Raises :class:`ProofError` if the proof cannot belong
    to a tree of that size.
    """
    if index < 0 or size < 0 or index >= size:
        raise ProofError(
            "proof_index_out_of_range",
            f"leaf index {index} is not below tree size {size}",
            "index",
        )
    _check_hash(leaf, "leaf_hash")
    for i, p in enumerate(proof):
        _check_hash(p, f"proof[{i}]")
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            raise ProofError(
                "proof_too_long", "inclusion proof has more hashes than the tree", "proof"
            )
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(
            "proof_too_short", "inclusion proof has fewer hashes than the tree", "proof"
        )
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes
) -> None:
    """Check that leaf hash ``leaf`` is at ``index`` in the tree of ``size`` with that root.

    Raises :class:`ProofError`; returns ``None`` when the proof verifies.
    """
    _check_hash(expected_root, "root")
    if root_from_inclusion_proof(index, size, leaf, proof) != expected_root:
        raise ProofError("proof_root_mismatch", "inclusion proof leads to a different root", "root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree (new_size, new_root) extends the tree (old_size, old_root).

    RFC 9162 §2.1.4.2. Raises :class:`ProofError`; returns ``None`` when it verifies.
    Equal sizes verify with an empty proof and equal roots (the roots' lengths are not
    examined there, as in the reference verifier; checkpoint parsing has already
    enforced 32-byte roots). A proof from size 0 is always an error.
    """
    if old_size < 0 or new_size < old_size:
        raise ProofError(
            "consistency_size_decreased",
            f"new size {new_size} is below old size {old_size}",
            "new_size",
        )
    if old_size == 0:
        raise ProofError(
            "consistency_from_empty",
            "a consistency proof from the empty tree proves nothing",
            "old_size",
        )
    if old_size == new_size:
        if proof:
            raise ProofError("proof_too_long", "equal sizes need an empty proof", "proof")
        if old_root != new_root:
            raise ProofError("consistency_fork", "same size, different roots", "new_root")
        return
    _check_hash(old_root, "old_root")
    _check_hash(new_root, "new_root")
    if not proof:
        raise ProofError("proof_too_short", "consistency proof is empty", "proof")
    for i, p in enumerate(proof):
        _check_hash(p, f"proof[{i}]")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is itself a node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("proof_too_long", "consistency proof has surplus hashes", "proof")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("proof_too_short", "consistency proof is missing hashes", "proof")
    if fr != old_root:
        raise ProofError("proof_root_mismatch", "proof does not lead to the old root", "old_root")
    if sr != new_root:
        raise ProofError("proof_root_mismatch", "proof does not lead to the new root", "new_root")


def list_hash_source(leaf_hashes: Sequence[bytes]) -> SubtreeHash:
    """A hash source over an in-memory list of leaf hashes (tests, small trees, tools)."""

    def subtree_hash(start: int, end: int) -> bytes:
        return root_from_leaf_hashes(leaf_hashes[start:end])

    return subtree_hash
