"""Batch receipts: what the receiver signs and what the sender accepts as proof."""

from __future__ import annotations

import hashlib

import pytest
from protocol_helpers import NOW_MS, make_node, pinned_keyring, seed, signing_key

from exchange_node.pb.exchange.v1 import envelope_pb2, types_pb2
from exchange_node.protocol.cards import sign_revocation
from exchange_node.protocol.errors import OpenError, Reason
from exchange_node.protocol.keyring import Keyring
from exchange_node.protocol.keys import SigningKey
from exchange_node.protocol.receipts import (
    Outcome,
    build_receipt,
    receipt_signature_input,
    verify_receipt,
)

BATCH_ID = seed("batch", 16)
HASHES = [hashlib.sha256(f"envelope {i}".encode()).digest() for i in range(3)]
CHECKPOINT = b"phl-dfa.example/log\n42\nq6bHS1cJ2dOd2kkK+nbZ9Q==\n\n\xe2\x80\x94 phl-dfa sig\n"
OUTCOMES = [
    Outcome(HASHES[0], seed("m0", 16), envelope_pb2.OUTCOME_ACCEPTED),
    Outcome(HASHES[1], seed("m1", 16), envelope_pb2.OUTCOME_DUPLICATE),
    Outcome(HASHES[2], b"", envelope_pb2.OUTCOME_REJECTED, types_pb2.REASON_EXPIRED),
]


def _receipt(
    *,
    outcomes=OUTCOMES,
    batch_id: bytes = BATCH_ID,
    receiver: str = "PHL-DFA",
    sender: str = "JPN-ISA",
    key: SigningKey | None = None,
    checkpoint: bytes = CHECKPOINT,
) -> bytes:
    """A receipt PHL-DFA signs for JPN-ISA's batch (changes for the refusals)."""
    return build_receipt(
        batch_id=batch_id,
        receiver=receiver,
        sender=sender,
        received_at_ms=NOW_MS,
        outcomes=outcomes,
        signing_key=key or make_node("PHL-DFA").signing_key,
        checkpoint=checkpoint,
    )


def _ring() -> Keyring:
    """The sender's keyring: it pinned PHL-DFA and IOM-MNL."""
    return pinned_keyring(make_node("PHL-DFA"), make_node("IOM-MNL"))


def _verify(signed: bytes, *, ring: Keyring | None = None, **overrides):
    args = {
        "receiver": "PHL-DFA",
        "sender": "JPN-ISA",
        "batch_id": BATCH_ID,
        "envelope_hashes": HASHES,
    }
    args.update(overrides)
    return verify_receipt(signed, keyring=ring or _ring(), **args)


def _refusal(signed: bytes, **overrides) -> Reason:
    with pytest.raises(OpenError) as info:
        _verify(signed, **overrides)
    assert str(info.value) == "protocol input refused"
    return info.value.reason


def _hand_signed(receipt: envelope_pb2.BatchReceipt) -> bytes:
    key = make_node("PHL-DFA").signing_key
    receipt.signer_key_id = key.key_id
    data = receipt.SerializeToString()
    return envelope_pb2.SignedReceipt(
        receipt=data, signature=key.sign(receipt_signature_input(data))
    ).SerializeToString()


def _as_built() -> envelope_pb2.BatchReceipt:
    return envelope_pb2.BatchReceipt.FromString(
        envelope_pb2.SignedReceipt.FromString(_receipt()).receipt
    )


# --- the round trip ---------------------------------------------------------------------


def test_receipt_verifies_with_its_outcomes_in_batch_order() -> None:
    verified = _verify(_receipt())
    assert verified.outcomes == tuple(OUTCOMES)
    assert verified.receipt.receiver == "PHL-DFA"
    assert verified.receipt.sender == "JPN-ISA"
    assert verified.receipt.received_at_ms == NOW_MS


def test_receipt_carries_the_receivers_checkpoint_bytes() -> None:
    assert _verify(_receipt()).checkpoint == CHECKPOINT


def test_receipt_without_checkpoint_has_empty_checkpoint() -> None:
    assert _verify(_receipt(checkpoint=b"")).checkpoint == b""


def test_verified_receipt_keeps_the_exact_signed_bytes() -> None:
    signed = _receipt()
    assert _verify(signed).signed == signed


def test_receipt_for_an_empty_batch_verifies() -> None:
    assert _verify(_receipt(outcomes=[]), envelope_hashes=[]).outcomes == ()


def test_rejection_reason_is_carried() -> None:
    assert _verify(_receipt()).outcomes[2].reason == types_pb2.REASON_EXPIRED


# --- refusals ---------------------------------------------------------------------------


def test_receipt_listing_other_hashes_is_refused() -> None:
    other = [hashlib.sha256(h).digest() for h in HASHES]
    assert _refusal(_receipt(), envelope_hashes=other) is Reason.MALFORMED


def test_receipt_listing_the_hashes_in_another_order_is_refused() -> None:
    assert _refusal(_receipt(), envelope_hashes=HASHES[::-1]) is Reason.MALFORMED


def test_receipt_missing_an_envelope_is_refused() -> None:
    assert _refusal(_receipt(outcomes=OUTCOMES[:2])) is Reason.MALFORMED


def test_receipt_listing_an_extra_envelope_is_refused() -> None:
    assert _refusal(_receipt(), envelope_hashes=HASHES[:2]) is Reason.MALFORMED


def test_receipt_for_another_batch_is_refused() -> None:
    assert _refusal(_receipt(batch_id=seed("other batch", 16))) is Reason.MALFORMED


def test_receipt_naming_another_receiver_is_refused() -> None:
    assert _refusal(_receipt(receiver="IOM-MNL")) is Reason.MALFORMED


def test_receipt_naming_another_sender_is_refused() -> None:
    assert _refusal(_receipt(sender="IOM-MNL")) is Reason.MALFORMED


def test_receipt_from_another_peer_than_the_one_sent_to_is_refused() -> None:
    # IOM-MNL signs a receipt for a batch that went to PHL-DFA.
    signed = _receipt(receiver="PHL-DFA", key=make_node("IOM-MNL").signing_key)
    assert _refusal(signed) is Reason.UNKNOWN_KEY


def test_receipt_expected_from_another_receiver_is_refused() -> None:
    assert _refusal(_receipt(), receiver="IOM-MNL") is Reason.UNKNOWN_KEY


def test_receipt_signed_by_an_unknown_key_is_refused() -> None:
    assert _refusal(_receipt(key=signing_key("mallory"))) is Reason.UNKNOWN_KEY


def test_receipt_from_a_peer_that_is_not_pinned_is_refused() -> None:
    assert _refusal(_receipt(), ring=Keyring()) is Reason.UNKNOWN_SENDER


def test_receipt_signed_by_a_revoked_key_is_refused() -> None:
    phl = make_node("PHL-DFA")
    ring = _ring()
    ring.revoke(
        sign_revocation(
            node_id="PHL-DFA",
            revoked_key_id=phl.signing_key.key_id,
            revoked_at_ms=NOW_MS,
            reason="key compromised",
            signer=phl.signing_key,
        )
    )
    assert _refusal(_receipt(), ring=ring) is Reason.KEY_REVOKED


def test_receipt_with_a_wrong_signature_is_refused() -> None:
    sr = envelope_pb2.SignedReceipt.FromString(_receipt())
    sr.signature = make_node("PHL-DFA").signing_key.sign(b"something else")
    assert _refusal(sr.SerializeToString()) is Reason.BAD_SIGNATURE


def test_every_single_byte_change_to_a_receipt_is_refused() -> None:
    signed = _receipt()
    ring = _ring()
    for i in range(len(signed)):
        tampered = bytearray(signed)
        tampered[i] ^= 0x01
        with pytest.raises(OpenError):
            _verify(bytes(tampered), ring=ring)


def test_garbage_receipt_is_malformed() -> None:
    assert _refusal(b"\xff\xff\xff") is Reason.MALFORMED


def test_receipt_body_that_does_not_parse_is_malformed() -> None:
    signed = envelope_pb2.SignedReceipt(receipt=b"\xff\xff", signature=bytes(64))
    assert _refusal(signed.SerializeToString()) is Reason.MALFORMED


def test_receipt_of_another_version_is_refused() -> None:
    receipt = _as_built()
    receipt.version = 2
    assert _refusal(_hand_signed(receipt)) is Reason.UNSUPPORTED_VERSION


def test_receipt_with_an_unspecified_outcome_is_refused() -> None:
    outcomes = [*OUTCOMES[:2], Outcome(HASHES[2], b"", envelope_pb2.OUTCOME_UNSPECIFIED)]
    assert _refusal(_receipt(outcomes=outcomes)) is Reason.MALFORMED


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        (envelope_pb2.OUTCOME_REJECTED, types_pb2.REASON_UNSPECIFIED),
        (envelope_pb2.OUTCOME_ACCEPTED, types_pb2.REASON_EXPIRED),
        (envelope_pb2.OUTCOME_DUPLICATE, types_pb2.REASON_MALFORMED),
        (7, types_pb2.REASON_UNSPECIFIED),
    ],
    ids=["rejected_without_reason", "accepted_with_reason", "duplicate_with_reason", "unknown"],
)
def test_receipt_whose_outcome_and_reason_disagree_is_refused(outcome: int, reason: int) -> None:
    outcomes = [*OUTCOMES[:2], Outcome(HASHES[2], b"", outcome, reason)]
    assert _refusal(_receipt(outcomes=outcomes)) is Reason.MALFORMED


def test_hand_signed_receipt_equal_to_a_built_one_verifies() -> None:
    # Guards the helper above: a refusal of a hand-signed receipt is due to its change.
    assert _verify(_hand_signed(_as_built())).outcomes == tuple(OUTCOMES)
