"""Full verification of a stored audit log: recompute everything, name the first bad leaf.

Reads the tables described in ``exchange_node.audit.log`` (and docs/audit-format.md,
section 9) in one pass over the leaves in seq order, holding O(log n) hashes in memory,
so ten million leaves verify without loading the log.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from exchange_node.audit import merkle
from exchange_node.audit.checkpoint import SignedCheckpoint, parse_checkpoint, verify_log_checkpoint
from exchange_node.audit.leaf import decode_leaf
from exchange_node.errors import ValidationError

__all__ = ["Problem", "Verifier", "VerifyReport"]


@dataclass(frozen=True)
class Problem:
    """One thing ``verify`` found wrong. ``seq`` is the first leaf it concerns, if any."""

    seq: int | None
    code: str
    message: str

    def __str__(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else "log"
        return f"{where}: {self.code}: {self.message}"


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of :meth:`AuditLog.verify`.

    ``problems`` are listed in the order found (at most 100). A Merkle node that differs
    because of a leaf (or node) already reported below it is not reported again, so
    ``first_bad_seq``, the lowest leaf index any problem names, is the first altered,
    missing or moved leaf, or the first leaf under the lowest altered node."""

    ok: bool
    tree_size: int
    leaves_checked: int
    nodes_checked: int
    checkpoints_checked: int
    problems: tuple[Problem, ...]

    @property
    def first_bad_seq(self) -> int | None:
        seqs = [p.seq for p in self.problems if p.seq is not None]
        return min(seqs) if seqs else None


PROGRESS_EVERY = 10_000


@dataclass
class Verifier:
    """One pass over the leaves in seq order, recomputing the tree as it goes.

    Run inside a read transaction so the pass sees one consistent state."""

    db: sqlite3.Connection
    origin: str
    # One key, or every signing key the node has had: checkpoints signed before a key
    # rotation carry the earlier key's signature.
    public_key: Ed25519PublicKey | Sequence[Ed25519PublicKey] | None
    problems: list[Problem] = field(default_factory=list)
    nodes_checked: int = 0
    # Told the number of leaves checked so far, every PROGRESS_EVERY leaves (a page
    # showing a long verification's progress).
    progress: Callable[[int], None] | None = None
    _levels: dict[int, Iterator[tuple[int, bytes]]] = field(default_factory=dict)
    _heads: dict[int, tuple[int, bytes] | None] = field(default_factory=dict)

    def problem(self, seq: int | None, code: str, message: str) -> None:
        if len(self.problems) < 100:
            self.problems.append(Problem(seq, code, message))

    def _explained(self, start: int, end: int) -> bool:
        """Whether a problem already found lies in leaves [start, end): a node above a
        bad leaf or a bad node differs too, and saying so again names nothing new."""
        return any(p.seq is not None and start <= p.seq < end for p in self.problems)

    def _stored_node(self, level: int, idx: int) -> bytes | None:
        """The stored node (level, idx); nodes are requested in increasing idx per level."""
        if level not in self._levels:
            cur = self.db.execute(
                "SELECT idx, hash FROM audit_nodes WHERE level = ? ORDER BY idx", (level,)
            )
            self._levels[level] = iter(cur)
            self._heads[level] = next(self._levels[level], None)
        head = self._heads[level]
        while head is not None and head[0] < idx:
            self.problem(
                None,
                "node_unexpected",
                f"stored node (level {level}, index {head[0]}) is not part of the tree",
            )
            head = next(self._levels[level], None)
        self._heads[level] = head
        if head is None or head[0] != idx:
            return None
        self._heads[level] = next(self._levels[level], None)
        return head[1]

    def run(self) -> VerifyReport:
        checkpoints = self._load_checkpoints()
        cp_index = 0
        frontier = merkle.Frontier()
        expected = 0
        broken_at: int | None = None  # the tree cannot be recomputed past a missing leaf
        rows = self.db.execute(
            "SELECT seq, data, hash, time, kind, actor, peer, message_id, subject_hash"
            " FROM audit_leaves ORDER BY seq"
        )
        while cp_index < len(checkpoints) and checkpoints[cp_index][0] == 0:
            self._check_root(checkpoints[cp_index], frontier)
            cp_index += 1
        for seq, data, stored_hash, time, kind, actor, peer, message_id, subject in rows:
            if seq != expected and broken_at is None:
                self.problem(expected, "leaf_missing", f"leaves {expected}..{seq - 1} are missing")
                broken_at = expected
            expected = seq + 1
            if self.progress is not None and expected % PROGRESS_EVERY == 0:
                self.progress(expected)
            h = merkle.leaf_hash(data)
            if h != stored_hash:
                self.problem(
                    seq,
                    "leaf_hash_mismatch",
                    "leaf bytes do not match their stored hash (leaf altered)",
                )
            try:
                rec = decode_leaf(data)
            except ValidationError as exc:
                self.problem(seq, "leaf_invalid", f"leaf bytes are not a valid leaf: {exc.message}")
            else:
                if rec.seq != seq:
                    self.problem(
                        seq,
                        "leaf_misplaced",
                        f"leaf bytes belong at seq {rec.seq} (leaves moved or reordered)",
                    )
                if (rec.time, rec.kind, rec.actor, rec.peer, rec.message_id, rec.subject_hash) != (
                    time,
                    kind,
                    actor,
                    peer,
                    message_id,
                    subject or "",
                ):
                    self.problem(
                        seq, "leaf_columns_mismatch", "query columns differ from the leaf bytes"
                    )
            if broken_at is not None:
                continue
            for level, idx, node in frontier.push(h):
                self.nodes_checked += 1
                stored = self._stored_node(level, idx)
                first = idx << level
                if stored != node and not self._explained(first, first + (1 << level)):
                    self.problem(
                        first,
                        "node_missing" if stored is None else "node_mismatch",
                        f"Merkle node over leaves {first}..{first + (1 << level) - 1}"
                        f" (level {level}) {'is missing' if stored is None else 'differs from the leaves'}",
                    )
            while cp_index < len(checkpoints) and checkpoints[cp_index][0] == frontier.size:
                self._check_root(checkpoints[cp_index], frontier)
                cp_index += 1
        size = expected
        stored_size = int(
            self.db.execute("SELECT value FROM audit_meta WHERE key = 'tree_size'").fetchone()[0]
        )
        if stored_size != size:
            self.problem(
                min(size, stored_size),
                "tree_size_mismatch",
                f"the log records {stored_size} leaves but {size} are stored (truncated or extended)",
            )
        for size_cp, *_ in checkpoints[cp_index:]:
            first = broken_at if broken_at is not None else size
            self.problem(
                first,
                "checkpoint_unverifiable" if broken_at is not None else "leaf_missing",
                f"signed checkpoint of size {size_cp} covers leaves {first}.. that are not stored intact",
            )
        if broken_at is None:
            for level in list(self._levels):
                self._stored_node(level, 1 << 62)  # anything left over is unexpected
            for level in self._unvisited_levels():
                self.problem(
                    None, "node_unexpected", f"stored nodes at level {level} are not in the tree"
                )
        return VerifyReport(
            ok=not self.problems,
            tree_size=size,
            leaves_checked=size,
            nodes_checked=self.nodes_checked,
            checkpoints_checked=len(checkpoints),
            problems=tuple(self.problems),
        )

    def _unvisited_levels(self) -> list[int]:
        levels = [lv for (lv,) in self.db.execute("SELECT DISTINCT level FROM audit_nodes")]
        return [lv for lv in levels if lv not in self._levels]

    def _load_checkpoints(self) -> list[tuple[int, bytes, str]]:
        out = []
        for tree_size, root, note in self.db.execute(
            "SELECT tree_size, root, note FROM audit_checkpoints ORDER BY tree_size"
        ):
            try:
                if self.public_key is not None:
                    cp = _verify_any(note, self.origin, self.public_key)
                else:
                    cp = SignedCheckpoint(parse_checkpoint(note)[0], note)
            except ValidationError as exc:
                self.problem(None, "checkpoint_invalid", f"checkpoint of size {tree_size}: {exc}")
                continue
            if cp.tree_size != tree_size or cp.root_hash != bytes(root):
                self.problem(
                    None,
                    "checkpoint_columns_mismatch",
                    f"checkpoint of size {tree_size}: columns differ from the signed note",
                )
                continue
            out.append((tree_size, bytes(root), note))
        if self.public_key is None:
            self.problem(
                None, "checkpoint_key_missing", "no public key given: signatures not checked"
            )
        return out

    def _check_root(self, cp: tuple[int, bytes, str], frontier: merkle.Frontier) -> None:
        size, root, _ = cp
        if frontier.root() != root:
            self.problem(
                None,
                "checkpoint_root_mismatch",
                f"signed checkpoint of size {size} does not match the stored leaves"
                " (leaves before it were altered and the nodes rewritten)",
            )


def _verify_any(
    note: str, origin: str, keys: Ed25519PublicKey | Sequence[Ed25519PublicKey]
) -> SignedCheckpoint:
    """Verify ``note`` by whichever of ``keys`` signed it (signed notes name the key by
    its hash, so at most one matches); raise the last key's error if none does."""
    candidates = [keys] if isinstance(keys, Ed25519PublicKey) else list(keys)
    error: ValidationError | None = None
    for key in candidates:
        try:
            return verify_log_checkpoint(note, origin, key)
        except ValidationError as exc:
            error = exc
            if exc.code != "note_signature_missing":
                break
    assert error is not None, "no public key given"
    raise error
