"""The persistent audit log: appends, proofs, checkpoints, tamper detection, witnessing."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange_node.audit import merkle
from exchange_node.audit.checkpoint import verify_checkpoint
from exchange_node.audit.leaf import AuditEvent, LeafKind
from exchange_node.audit.log import AuditLog
from exchange_node.errors import ConflictError, ExchangeError, NotFoundError, ValidationError

NODE = "JPN-ISA"
ORIGIN = f"exchange-node.example/{NODE}"
KEY = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)


def event(i: int, kind: str = LeafKind.ENVELOPE_SENT, **kw: object) -> AuditEvent:
    fields = {"time": 1_700_000_000_000 + i, "kind": kind, "actor": NODE, "peer": "PHL-DFA"}
    fields |= {"message_id": f"{i:032x}"} | kw
    return AuditEvent(**fields)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "audit.db"


@pytest.fixture
def log(db: Path):
    with AuditLog(db, node_id=NODE, signing_key=KEY) as lg:
        yield lg


def filled(log: AuditLog, n: int) -> AuditLog:
    log.append_many(event(i) for i in range(n))
    return log


def raw(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(db, isolation_level=None)


# -- appending ---------------------------------------------------------------------


def test_append_returns_consecutive_seqs(log: AuditLog) -> None:
    assert log.append(event(0)) == 0
    assert log.append_many([event(1), event(2)]) == range(1, 3)
    assert log.size == 3


def test_leaf_bytes_record_their_seq(log: AuditLog) -> None:
    filled(log, 3)
    assert log.leaf(2).record.seq == 2


def test_root_equals_reference_root_of_stored_leaf_bytes(log: AuditLog) -> None:
    filled(log, 37)
    assert log.root() == merkle.root(log.leaf(i).data for i in range(37))


def test_log_reopened_continues_the_same_tree(db: Path) -> None:
    with AuditLog(db, node_id=NODE, signing_key=KEY) as lg:
        filled(lg, 5)
    with AuditLog(db, node_id=NODE, signing_key=KEY) as lg:
        lg.append(event(5))
        assert lg.root() == merkle.root(lg.leaf(i).data for i in range(6))


def test_two_handles_on_one_file_do_not_fork_the_tree(db: Path) -> None:
    with AuditLog(db, node_id=NODE) as a, AuditLog(db, node_id=NODE) as b:
        a.append(event(0))
        b.append(event(1))
        a.append(event(2))
        assert a.root() == b.root() == merkle.root(a.leaf(i).data for i in range(3))


def test_empty_append_many_appends_nothing(log: AuditLog) -> None:
    assert log.append_many([]) == range(0, 0)
    assert log.size == 0


def test_log_of_another_node_is_refused(db: Path) -> None:
    AuditLog(db, node_id=NODE).close()
    with pytest.raises(ValidationError) as exc:
        AuditLog(db, node_id="PHL-DFA")
    assert exc.value.code == "audit_log_origin_mismatch"


def test_missing_file_is_not_created_when_create_is_false(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        AuditLog(tmp_path / "nope.db", node_id=NODE, create=False)
    assert not (tmp_path / "nope.db").exists()


def test_file_uses_wal_and_full_sync(log: AuditLog) -> None:
    assert log._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert log._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


# -- queries -----------------------------------------------------------------------


def test_query_filters_by_kind_actor_peer_and_time(log: AuditLog) -> None:
    log.append_many(
        [
            event(0, LeafKind.DOCUMENT_LOOKUP, actor="officer-a"),
            event(1, LeafKind.DOCUMENT_LOOKUP, actor="officer-b"),
            event(2, LeafKind.ENVELOPE_SENT, peer="IOM-MNL"),
            event(3, LeafKind.DOCUMENT_LOOKUP, actor="officer-a"),
        ]
    )
    t0 = 1_700_000_000_000
    assert [x.seq for x in log.query(kind="document.lookup", actor="officer-a")] == [0, 3]
    assert [x.seq for x in log.query(peer="IOM-MNL")] == [2]
    assert [x.seq for x in log.query(since=t0 + 1, until=t0 + 3)] == [1, 2]
    assert [x.seq for x in log.query(message_id=f"{3:032x}")] == [3]
    assert [x.seq for x in log.query(limit=2, after_seq=0)] == [1, 2]


# -- checkpoints and proofs -----------------------------------------------------------


def test_signed_checkpoint_verifies_with_the_log_key(log: AuditLog) -> None:
    filled(log, 10)
    signed = log.sign_checkpoint(now=1)
    cp = verify_checkpoint(signed.note, ORIGIN, KEY.public_key(), origin=ORIGIN)
    assert (cp.tree_size, cp.root_hash) == (10, log.root())


def test_signing_twice_without_appends_returns_the_same_checkpoint(log: AuditLog) -> None:
    filled(log, 3)
    assert log.sign_checkpoint(now=1) == log.sign_checkpoint(now=2)
    assert len(log.checkpoints()) == 1


def test_signing_without_key_is_refused(db: Path) -> None:
    with AuditLog(db, node_id=NODE) as lg, pytest.raises(ConflictError) as exc:
        lg.sign_checkpoint(now=1)
    assert exc.value.code == "audit_log_read_only"


def test_inclusion_proof_comes_with_its_checkpoint_and_verifies(log: AuditLog) -> None:
    filled(log, 21)
    log.sign_checkpoint(now=1)
    p = log.inclusion_proof(13)
    assert p.tree_size == 21
    merkle.verify_inclusion(13, 21, merkle.leaf_hash(p.leaf), p.hashes, p.checkpoint.root_hash)


def test_inclusion_proof_against_an_older_checkpoint(log: AuditLog) -> None:
    filled(log, 8)
    old = log.sign_checkpoint(now=1)
    log.append_many(event(i) for i in range(8, 30))
    log.sign_checkpoint(now=2)
    p = log.inclusion_proof(5, tree_size=8)
    assert p.checkpoint == old
    merkle.verify_inclusion(5, 8, merkle.leaf_hash(p.leaf), p.hashes, old.root_hash)


def test_leaf_after_latest_checkpoint_has_no_proof_yet(log: AuditLog) -> None:
    filled(log, 3)
    log.sign_checkpoint(now=1)
    log.append(event(3))
    with pytest.raises(NotFoundError) as exc:
        log.inclusion_proof(3)
    assert exc.value.code == "leaf_not_in_checkpoint"


def test_proof_before_any_checkpoint_is_not_found(log: AuditLog) -> None:
    filled(log, 3)
    with pytest.raises(NotFoundError) as exc:
        log.inclusion_proof(0)
    assert exc.value.code == "checkpoint_not_found"


def test_consistency_proof_links_old_checkpoint_to_new(log: AuditLog) -> None:
    filled(log, 11)
    old = log.sign_checkpoint(now=1)
    log.append_many(event(i) for i in range(11, 40))
    new = log.sign_checkpoint(now=2)
    p = log.consistency_proof(11)
    assert (p.checkpoint, p.old_checkpoint, p.old_root) == (new, old, old.root_hash)
    merkle.verify_consistency(11, 40, old.root_hash, new.root_hash, p.hashes)


def test_store_proofs_match_reference_for_random_sizes_and_indexes(log: AuditLog) -> None:
    rng = random.Random(20)
    n = 3000
    sizes = sorted(rng.sample(range(1, n), 10)) + [n]
    for i in range(n):  # grow the log in uneven batches, signing at the chosen sizes
        if i == 0 or rng.random() < 0.02 or i in sizes:
            log.append_many(event(j) for j in range(log.size, i))
            if log.size in sizes:
                log.sign_checkpoint(now=i)
    log.append_many(event(j) for j in range(log.size, n))
    log.sign_checkpoint(now=n)
    reference = merkle.list_hash_source([merkle.leaf_hash(log.leaf(i).data) for i in range(n)])
    for _ in range(80):
        size = rng.choice(sizes)
        idx, old = rng.randrange(size), rng.randint(1, size)
        assert list(log.inclusion_proof(idx, tree_size=size).hashes) == merkle.inclusion_proof(
            idx, size, reference
        )
        assert list(log.consistency_proof(old, size).hashes) == merkle.consistency_proof(
            old, size, reference
        )


# -- never sign an inconsistent checkpoint -----------------------------------------------


def test_refuses_to_sign_after_the_log_was_rewritten(db: Path, log: AuditLog) -> None:
    filled(log, 10)
    log.sign_checkpoint(now=1)
    with raw(db) as c:  # rewrite history: a different leaf 9 and matching hashes
        c.execute("DELETE FROM audit_leaves WHERE seq = 9")
        c.execute("DELETE FROM audit_nodes WHERE idx >= 4 AND level = 1")
        c.execute("UPDATE audit_meta SET value = 9 WHERE key = 'tree_size'")
    log.append(event(99))
    with pytest.raises(ConflictError) as exc:
        log.sign_checkpoint(now=2)
    assert exc.value.code == "checkpoint_inconsistent"


def test_refuses_to_sign_a_smaller_tree_even_if_checkpoints_were_deleted(
    db: Path, log: AuditLog
) -> None:
    filled(log, 10)
    log.sign_checkpoint(now=1)
    with raw(db) as c:
        c.execute("DELETE FROM audit_checkpoints")
        c.execute("DELETE FROM audit_leaves WHERE seq >= 8")
        c.execute("UPDATE audit_meta SET value = 8 WHERE key = 'tree_size'")
    with pytest.raises(ConflictError):
        log.sign_checkpoint(now=2)


# -- verify: tamper detection ----------------------------------------------------------


def _tampered(db: Path, log: AuditLog, sql: str, *args: object) -> None:
    filled(log, 16)
    log.sign_checkpoint(now=1)
    with raw(db) as c:
        c.execute(sql, args)


def test_intact_log_verifies(log: AuditLog) -> None:
    filled(log, 100)
    log.sign_checkpoint(now=1)
    log.append_many(event(i) for i in range(100, 150))
    log.sign_checkpoint(now=2)
    report = log.verify(KEY.public_key())
    assert report.ok and report.problems == ()
    assert (report.tree_size, report.checkpoints_checked) == (150, 2)


def test_flipped_byte_in_a_leaf_names_that_seq(db: Path, log: AuditLog) -> None:
    filled(log, 16)
    data = bytearray(log.leaf(6).data)
    data[data.index(b"PHL")] ^= 0x01
    with raw(db) as c:
        c.execute("UPDATE audit_leaves SET data = ? WHERE seq = 6", (bytes(data),))
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 6
    assert report.problems[0].code == "leaf_hash_mismatch"


def test_leaf_rewritten_with_matching_hash_is_caught_by_the_tree(db: Path, log: AuditLog) -> None:
    _tampered(db, log, "SELECT 1")
    forged = log.leaf(6).data.replace(b"PHL-DFA", b"PHL-DFB")
    with raw(db) as c:
        c.execute(
            "UPDATE audit_leaves SET data = ?, hash = ?, peer = 'PHL-DFB' WHERE seq = 6",
            (forged, merkle.leaf_hash(forged)),
        )
    report = log.verify()
    assert report.first_bad_seq == 6
    assert {p.code for p in report.problems} >= {"node_mismatch", "checkpoint_root_mismatch"}


def test_deleted_leaf_names_that_seq(db: Path, log: AuditLog) -> None:
    _tampered(db, log, "DELETE FROM audit_leaves WHERE seq = 9")
    report = log.verify()
    assert report.first_bad_seq == 9
    assert report.problems[0].code == "leaf_missing"


def test_deleted_last_leaf_is_detected(db: Path, log: AuditLog) -> None:
    _tampered(db, log, "DELETE FROM audit_leaves WHERE seq = 15")
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 15


def test_reordered_leaves_name_the_first_moved_seq(db: Path, log: AuditLog) -> None:
    filled(log, 16)
    log.sign_checkpoint(now=1)
    with raw(db) as c:
        c.execute("UPDATE audit_leaves SET seq = -1 WHERE seq = 4")
        c.execute("UPDATE audit_leaves SET seq = 4 WHERE seq = 11")
        c.execute("UPDATE audit_leaves SET seq = 11 WHERE seq = -1")
    report = log.verify()
    assert report.first_bad_seq == 4
    assert report.problems[0].code == "leaf_misplaced"


def test_altered_query_column_is_detected(db: Path, log: AuditLog) -> None:
    _tampered(db, log, "UPDATE audit_leaves SET actor = 'someone-else' WHERE seq = 3")
    report = log.verify()
    assert report.first_bad_seq == 3
    assert report.problems[0].code == "leaf_columns_mismatch"


def test_altered_interior_node_is_detected(db: Path, log: AuditLog) -> None:
    _tampered(db, log, "UPDATE audit_nodes SET hash = zeroblob(32) WHERE level = 2 AND idx = 1")
    report = log.verify()
    assert report.first_bad_seq == 4
    assert report.problems[0].code == "node_mismatch"


def test_checkpoint_signed_by_another_key_is_reported(log: AuditLog) -> None:
    filled(log, 4)
    log.sign_checkpoint(now=1)
    report = log.verify(Ed25519PrivateKey.generate().public_key())
    assert not report.ok
    assert report.problems[0].code == "checkpoint_invalid"


def test_proof_from_a_corrupted_store_is_refused(db: Path, log: AuditLog) -> None:
    _tampered(db, log, "UPDATE audit_nodes SET hash = zeroblob(32) WHERE level = 3 AND idx = 1")
    with pytest.raises(ExchangeError) as exc:
        log.inclusion_proof(2)
    assert exc.value.code == "audit_log_corrupt"


# -- witnessing a peer's checkpoints --------------------------------------------------


PEER = "PHL-DFA"
PEER_KEY = Ed25519PrivateKey.from_private_bytes(b"\x02" * 32)


@pytest.fixture
def peer_log(tmp_path: Path):
    with AuditLog(tmp_path / "peer.db", node_id=PEER, signing_key=PEER_KEY) as lg:
        yield lg


def _record(log: AuditLog, peer_log: AuditLog, note: str):  # peer_log answers proofs
    return log.record_peer_checkpoint(
        PEER, note, PEER_KEY.public_key(), peer_log.consistency_hashes, now=5
    )


def test_first_and_grown_peer_checkpoints_are_consistent(log: AuditLog, peer_log) -> None:
    filled(peer_log, 7)
    assert _record(log, peer_log, peer_log.sign_checkpoint(now=1).note).status == "first"
    peer_log.append_many(event(i) for i in range(7, 30))
    result = _record(log, peer_log, peer_log.sign_checkpoint(now=2).note)
    assert (result.status, result.old_size, result.new_size) == ("consistent", 7, 30)
    assert log.peer_checkpoint(PEER).tree_size == 30


def test_older_consistent_peer_checkpoint_is_stale_not_an_alarm(log: AuditLog, peer_log) -> None:
    filled(peer_log, 7)
    old = peer_log.sign_checkpoint(now=1).note
    peer_log.append_many(event(i) for i in range(7, 30))
    _record(log, peer_log, peer_log.sign_checkpoint(now=2).note)
    assert _record(log, peer_log, old).status == "stale"
    assert log.peer_checkpoint(PEER).tree_size == 30


def _truncate(path: Path, keep: int) -> None:
    """What an operator with database access would do to rewrite history quietly."""
    with raw(path) as c:
        c.execute("DELETE FROM audit_leaves WHERE seq >= ?", (keep,))
        c.execute("DELETE FROM audit_nodes WHERE ((idx + 1) << level) > ?", (keep,))
        c.execute("DELETE FROM audit_checkpoints")
        c.execute("UPDATE audit_meta SET value = ? WHERE key = 'tree_size'", (keep,))


def test_truncated_regrown_and_resigned_peer_log_is_exposed(tmp_path: Path, log: AuditLog) -> None:
    path = tmp_path / "peer.db"
    with AuditLog(path, node_id=PEER, signing_key=PEER_KEY) as honest:
        filled(honest, 20)
        assert _record(log, honest, honest.sign_checkpoint(now=1).note).status == "first"
    _truncate(path, 12)
    with AuditLog(path, node_id=PEER, signing_key=PEER_KEY) as forged:
        forged.append_many(event(i, actor="someone-else") for i in range(12, 25))
        result = _record(log, forged, forged.sign_checkpoint(now=2).note)
    assert (result.status, result.reason) == ("inconsistent", "checkpoint_inconsistent")
    leaf = log.leaf(result.audit_seq).record
    assert (leaf.kind, leaf.peer, leaf.attrs["old_size"]) == ("checkpoint.inconsistent", PEER, "20")
    assert log.peer_checkpoint(PEER).tree_size == 20  # the held checkpoint stays


def test_truncated_and_resigned_smaller_peer_log_is_exposed(tmp_path: Path, log: AuditLog) -> None:
    path = tmp_path / "peer.db"
    with AuditLog(path, node_id=PEER, signing_key=PEER_KEY) as honest:
        filled(honest, 20)
        _record(log, honest, honest.sign_checkpoint(now=1).note)
    _truncate(path, 12)
    with AuditLog(path, node_id=PEER, signing_key=PEER_KEY) as forged:
        result = _record(log, forged, forged.sign_checkpoint(now=2).note)
    assert (result.status, result.reason) == ("inconsistent", "checkpoint_rollback")


def test_an_inconsistent_checkpoint_is_kept_only_with_its_alarm_leaf(
    tmp_path: Path, db: Path, log: AuditLog, monkeypatch
) -> None:
    """The evidence and the checkpoint.inconsistent leaf are one transaction: when the
    leaf cannot be written (a full disk), the evidence is not kept either."""
    path = tmp_path / "peer.db"
    with AuditLog(path, node_id=PEER, signing_key=PEER_KEY) as honest:
        filled(honest, 20)
        _record(log, honest, honest.sign_checkpoint(now=1).note)
    _truncate(path, 12)

    def disk_full(*_args):
        raise sqlite3.OperationalError("database or disk is full")

    def stored() -> list[str]:
        with sqlite3.connect(db) as c:
            return [r[0] for r in c.execute("SELECT status FROM audit_peer_checkpoints")]

    with AuditLog(path, node_id=PEER, signing_key=PEER_KEY) as forged:
        note = forged.sign_checkpoint(now=2).note
        with monkeypatch.context() as m:
            m.setattr("exchange_node.audit.log._append_rows", disk_full)
            with pytest.raises(sqlite3.OperationalError):
                _record(log, forged, note)
        assert (stored(), log.size) == (["first"], 0)
        result = _record(log, forged, note)  # the disk has room again
    assert stored() == ["first", "inconsistent"]
    assert log.size == 1 and log.leaf(result.audit_seq).record.kind == "checkpoint.inconsistent"


def test_transport_failure_while_fetching_proof_stores_nothing(log: AuditLog, peer_log) -> None:
    filled(peer_log, 3)
    _record(log, peer_log, peer_log.sign_checkpoint(now=1).note)
    peer_log.append(event(3))

    def unreachable(old: int, new: int) -> list[bytes]:
        raise ConnectionError("peer down")

    with pytest.raises(ConnectionError):
        log.record_peer_checkpoint(
            PEER, peer_log.sign_checkpoint(now=2).note, PEER_KEY.public_key(), unreachable, now=3
        )
    assert log.peer_checkpoint(PEER).tree_size == 3 and log.size == 0


def test_same_size_different_root_is_a_fork(log: AuditLog, tmp_path: Path) -> None:
    a = AuditLog(tmp_path / "a.db", node_id=PEER, signing_key=PEER_KEY)
    b = AuditLog(tmp_path / "b.db", node_id=PEER, signing_key=PEER_KEY)
    filled(a, 5)
    b.append_many(event(i, actor="other") for i in range(5))
    _record(log, a, a.sign_checkpoint(now=1).note)
    result = _record(log, b, b.sign_checkpoint(now=1).note)
    assert (result.status, result.reason) == ("inconsistent", "checkpoint_fork")


def test_shrunk_peer_log_is_a_rollback(log: AuditLog, tmp_path: Path) -> None:
    a = AuditLog(tmp_path / "a.db", node_id=PEER, signing_key=PEER_KEY)
    b = AuditLog(tmp_path / "b.db", node_id=PEER, signing_key=PEER_KEY)
    filled(a, 9)
    b.append_many(event(i, actor="other") for i in range(4))
    _record(log, a, a.sign_checkpoint(now=1).note)
    result = log.record_peer_checkpoint(
        PEER, b.sign_checkpoint(now=1).note, PEER_KEY.public_key(), a.consistency_hashes, now=2
    )
    assert (result.status, result.reason) == ("inconsistent", "checkpoint_rollback")


def test_peer_checkpoint_with_bad_signature_is_refused_and_not_stored(
    log: AuditLog, peer_log
) -> None:
    filled(peer_log, 3)
    note = peer_log.sign_checkpoint(now=1).note.replace("\n3\n", "\n4\n")
    with pytest.raises(ValidationError):
        _record(log, peer_log, note)
    assert log.peer_checkpoint(PEER) is None and log.size == 0


def test_verify_tells_its_progress_every_ten_thousand_leaves(log: AuditLog) -> None:
    log.append_many([event(i) for i in range(25_000)])
    seen: list[int] = []
    assert log.verify(progress=seen.append).ok
    assert seen == [10_000, 20_000]


def test_newest_first_pages_and_the_subject_filter(log: AuditLog) -> None:
    subject = "ab" * 32
    log.append_many(
        [event(i, LeafKind.DOCUMENT_LOOKUP, subject_hash=subject if i % 3 == 0 else "cd" * 32)
         for i in range(10)]
    )  # fmt: skip
    from exchange_node.audit.log import LeafFilter

    page = log.select(LeafFilter(newest_first=True, before_seq=8, limit=3))
    assert [x.seq for x in page] == [7, 6, 5]
    assert [x.seq for x in log.select(LeafFilter(subject_hash=subject))] == [0, 3, 6, 9]
    with pytest.raises(ValidationError):
        log.select(LeafFilter(subject_hash="not-hex"))
