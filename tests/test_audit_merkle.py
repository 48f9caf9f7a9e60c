"""RFC 9162 Merkle math against the published transparency-dev vectors and the RFC text."""

from __future__ import annotations

import base64
import hashlib
import json
import random

import pytest

from exchange_node.audit import merkle
from tests.vector_paths import MERKLE

VECTORS = MERKLE


def _b64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def _load(kind: str) -> list[tuple[str, dict]]:
    files = sorted(VECTORS.glob(f"{kind}/**/*.json"))
    return [(str(f.relative_to(VECTORS)), json.loads(f.read_text())) for f in files]


INCLUSION = _load("inclusion")
CONSISTENCY = _load("consistency")
TREE = json.loads((VECTORS / "tree-roots.json").read_text())
LEAVES = [bytes.fromhex(h) for h in TREE["leaf_inputs_hex"]]


# -- the RFC 9162 §2.1 definitions, transcribed literally, as the reference -----------


def ref_mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = merkle.split_point(n)
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = merkle.split_point(n)
    if m < k:
        return ref_path(m, d[:k]) + [ref_mth(d[k:])]
    return ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = merkle.split_point(n)
    if m <= k:
        return ref_subproof(m, d[:k], b) + [ref_mth(d[k:])]
    return ref_subproof(m - k, d[k:], False) + [ref_mth(d[:k])]


def ref_consistency(m: int, d: list[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True)


# -- vectors -------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "v"), INCLUSION, ids=[n for n, _ in INCLUSION])
def test_inclusion_verifier_accepts_exactly_the_valid_vectors(name: str, v: dict) -> None:
    args = (v["leafIdx"], v["treeSize"], _b64(v["leafHash"]), [_b64(p) for p in v["proof"] or []])
    if v["wantErr"]:
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(*args, _b64(v["root"]))
    else:
        merkle.verify_inclusion(*args, _b64(v["root"]))


@pytest.mark.parametrize(("name", "v"), CONSISTENCY, ids=[n for n, _ in CONSISTENCY])
def test_consistency_verifier_accepts_exactly_the_valid_vectors(name: str, v: dict) -> None:
    args = (v["size1"], v["size2"], _b64(v["root1"]), _b64(v["root2"]))
    proof = [_b64(p) for p in v["proof"] or []]
    if v["wantErr"]:
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(*args, proof)
    else:
        merkle.verify_consistency(*args, proof)


def test_vector_set_is_complete() -> None:
    assert len(INCLUSION) >= 90 and len(CONSISTENCY) >= 90
    assert any(not v["wantErr"] for _, v in INCLUSION)
    assert any(not v["wantErr"] for _, v in CONSISTENCY)


@pytest.mark.parametrize("size", range(len(TREE["roots_hex_by_size"])))
def test_root_of_first_n_leaves_matches_tree_roots_vector(size: int) -> None:
    assert merkle.root(LEAVES[:size]).hex() == TREE["roots_hex_by_size"][size]


def _happy(vectors: list[tuple[str, dict]]) -> list[dict]:
    return [v for name, v in vectors if name.endswith("happy-path.json")]


@pytest.mark.parametrize("v", _happy(INCLUSION))
def test_generated_inclusion_proof_equals_happy_path_vector(v: dict) -> None:
    hashes = [merkle.leaf_hash(x) for x in LEAVES[: v["treeSize"]]]
    proof = merkle.inclusion_proof(v["leafIdx"], v["treeSize"], merkle.list_hash_source(hashes))
    assert proof == [_b64(p) for p in v["proof"] or []]


@pytest.mark.parametrize("v", _happy(CONSISTENCY))
def test_generated_consistency_proof_equals_happy_path_vector(v: dict) -> None:
    hashes = [merkle.leaf_hash(x) for x in LEAVES[: v["size2"]]]
    proof = merkle.consistency_proof(v["size1"], v["size2"], merkle.list_hash_source(hashes))
    assert proof == [_b64(p) for p in v["proof"] or []]


# -- generation and verification against the RFC text ---------------------------------


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert merkle.root([]) == hashlib.sha256(b"").digest() == merkle.EMPTY_ROOT


def test_every_proof_up_to_33_leaves_matches_reference_and_verifies() -> None:
    data = [i.to_bytes(4, "big") for i in range(33)]
    for n in range(1, 34):
        d = data[:n]
        hashes = [merkle.leaf_hash(x) for x in d]
        src = merkle.list_hash_source(hashes)
        r = ref_mth(d)
        assert merkle.root(d) == r
        for i in range(n):
            proof = merkle.inclusion_proof(i, n, src)
            assert proof == ref_path(i, d)
            merkle.verify_inclusion(i, n, hashes[i], proof, r)
        for m in range(1, n + 1):
            proof = merkle.consistency_proof(m, n, src)
            assert proof == ref_consistency(m, d)
            merkle.verify_consistency(m, n, ref_mth(d[:m]), r, proof)


def test_frontier_push_reports_each_complete_subtree_once() -> None:
    f = merkle.Frontier()
    created = []
    for i in range(16):
        created += f.push(merkle.leaf_hash(bytes([i])))
    assert sorted((lv, i) for lv, i, _ in created) == sorted(
        [(1, i) for i in range(8)] + [(2, i) for i in range(4)] + [(3, 0), (3, 1), (4, 0)]
    )


def test_range_nodes_rejects_a_range_that_is_neither_subtree_nor_right_edge() -> None:
    with pytest.raises(ValueError):
        merkle.range_nodes(1, 4)


def test_inclusion_proof_for_leaf_outside_tree_is_refused() -> None:
    with pytest.raises(ValueError):
        merkle.inclusion_proof(5, 5, merkle.list_hash_source([]))


def test_consistency_proof_from_empty_tree_is_refused() -> None:
    with pytest.raises(ValueError):
        merkle.consistency_proof(0, 5, merkle.list_hash_source([]))


def test_inclusion_proof_with_a_short_hash_is_rejected_with_code() -> None:
    hashes = [merkle.leaf_hash(bytes([i])) for i in range(4)]
    proof = merkle.inclusion_proof(1, 4, merkle.list_hash_source(hashes))
    proof[0] = proof[0][:31]
    with pytest.raises(merkle.ProofError) as exc:
        merkle.verify_inclusion(1, 4, hashes[1], proof, merkle.root_from_leaf_hashes(hashes))
    assert exc.value.code == "hash_size_invalid"


def test_random_large_trees_agree_with_reference() -> None:
    rng = random.Random(9162)
    data = [rng.randbytes(8) for _ in range(300)]
    hashes = [merkle.leaf_hash(x) for x in data]
    src = merkle.list_hash_source(hashes)
    for _ in range(40):
        n = rng.randint(1, 300)
        i = rng.randrange(n)
        m = rng.randint(1, n)
        assert merkle.inclusion_proof(i, n, src) == ref_path(i, data[:n])
        assert merkle.consistency_proof(m, n, src) == ref_consistency(m, data[:n])
