"""Node cards: issuing, verifying, fingerprints, pinning, rotation and revocation."""

from __future__ import annotations

import re

import pytest
from protocol_helpers import (
    BOTH_SUITES,
    KEYS_FROM_MS,
    NOW_MS,
    TLS_CERTIFICATE,
    Node,
    encryption_key,
    make_node,
    pinned_keyring,
    rotated,
    sign_card_bytes,
    signing_key,
)

from exchange_node.pb.exchange.v1 import card_pb2
from exchange_node.protocol.cards import (
    MAX_CARD_BYTES,
    CardKey,
    announced_card_bytes,
    card_fingerprint,
    issue_card,
    normalise_fingerprint,
    sign_revocation,
    verify_card,
    verify_revocation,
    verify_rotation,
)
from exchange_node.protocol.errors import OpenError, Reason
from exchange_node.protocol.keyring import FingerprintMismatch, Keyring
from exchange_node.protocol.keys import Suite

FINGERPRINT_RE = re.compile(r"^[A-Z2-7]{4}(-[A-Z2-7]{4}){7}$")


def _card(node: Node) -> card_pb2.NodeCard:
    """The NodeCard inside ``node``'s SignedCard, for hand-made variants."""
    return card_pb2.NodeCard.FromString(card_pb2.SignedCard.FromString(node.signed_card).card)


def _revoke(node: Node, revoked_key_id: bytes, signer=None, at_ms: int = NOW_MS) -> bytes:
    return sign_revocation(
        node_id=node.node_id,
        revoked_key_id=revoked_key_id,
        revoked_at_ms=at_ms,
        reason="key compromised",
        signer=signer or node.signing_key,
    )


# --- issue and verify -------------------------------------------------------------------


@pytest.mark.parametrize("suite", BOTH_SUITES, ids=lambda s: s.name)
def test_issued_card_verifies_with_its_fields(suite: Suite) -> None:
    node = make_node("PHL-DFA", suite)
    card = verify_card(node.signed_card)
    assert (card.node_id, card.country, card.serial) == ("PHL-DFA", "PHL", 1)
    assert card.endpoint == "https://phl-dfa.example:8443"
    assert card.tls_certificate == TLS_CERTIFICATE
    assert card.current_signing_key.public == node.signing_key.public
    assert card.current_encryption_key.key_id == node.encryption_keys[0].key_id
    assert card.current_encryption_key.algorithm == suite.key_algorithm
    assert card.signer_key_ids == {node.signing_key.key_id}
    assert card.signed == node.signed_card


@pytest.mark.parametrize("node_id", ["phl dfa", "PHL-DFA\n", "-PHL", "P"])
def test_issue_card_refuses_an_invalid_node_id(node_id: str) -> None:
    with pytest.raises(ValueError, match="node id"):
        issue_card(
            node_id=node_id,
            country="PHL",
            endpoint="https://x.example",
            display_name="x",
            signing_keys=[CardKey(signing_key("x"), KEYS_FROM_MS)],
            encryption_keys=[CardKey(encryption_key("x", Suite.X25519), KEYS_FROM_MS)],
            tls_certificate=b"",
            serial=1,
            issued_at_ms=NOW_MS,
        )


# --- fingerprints -----------------------------------------------------------------------


def test_fingerprint_is_eight_groups_of_four_base32_characters() -> None:
    assert FINGERPRINT_RE.match(make_node("JPN-ISA").fingerprint)


def test_fingerprint_follows_the_documented_construction() -> None:
    # base32(SHA-256("exchange-node/v1/card-fingerprint" || 0x00 || u32be(4) || "card")[:20])
    assert card_fingerprint(b"card") == "SP5S-YP6L-AKIO-WJCD-72FG-SO4M-TUOA-7JHK"


def test_fingerprint_is_stable_for_the_same_card_bytes() -> None:
    node = make_node("JPN-ISA")
    assert verify_card(node.signed_card).fingerprint == verify_card(node.signed_card).fingerprint
    assert node.fingerprint == card_fingerprint(_card(node).SerializeToString())


def test_fingerprint_covers_the_card_not_its_signatures() -> None:
    node = make_node("JPN-ISA")
    cosigned = sign_card_bytes(_card(node), node.signing_key, signing_key("witness"))
    assert verify_card(cosigned).fingerprint == node.fingerprint


def test_fingerprints_of_different_cards_differ() -> None:
    assert make_node("JPN-ISA").fingerprint != make_node("PHL-DFA").fingerprint


def test_normalise_fingerprint_accepts_lower_case_and_spaces() -> None:
    fp = make_node("JPN-ISA").fingerprint
    typed = " ".join(fp.replace("-", "").lower()[i : i + 8] for i in range(0, 32, 8))
    assert normalise_fingerprint(typed) == fp


# --- pinning ----------------------------------------------------------------------------


def test_pin_with_the_right_fingerprint_pins_the_card() -> None:
    node = make_node("JPN-ISA")
    ring = Keyring()
    card = ring.pin(node.signed_card, node.fingerprint)
    assert ring.get("JPN-ISA") == card


def test_pin_accepts_a_fingerprint_typed_in_lower_case_with_spaces() -> None:
    node = make_node("JPN-ISA")
    ring = Keyring()
    ring.pin(node.signed_card, node.fingerprint.lower().replace("-", " "))
    assert ring.get("JPN-ISA") is not None


def test_pin_with_a_wrong_fingerprint_raises_and_pins_nothing() -> None:
    node = make_node("JPN-ISA")
    ring = Keyring()
    with pytest.raises(FingerprintMismatch) as info:
        ring.pin(node.signed_card, make_node("PHL-DFA").fingerprint)
    assert info.value.actual == node.fingerprint
    assert "do not pin it" in str(info.value)
    assert ring.peers == {}


def test_pin_of_an_invalid_card_raises_open_error_and_pins_nothing() -> None:
    ring = Keyring()
    with pytest.raises(OpenError):
        ring.pin(b"\x00garbage", "AAAA")
    assert ring.peers == {}


def test_keyring_rebuilds_from_stored_cards_and_revocations() -> None:
    a, b = make_node("JPN-ISA"), make_node("PHL-DFA")
    ring = Keyring.from_cards([a.signed_card, b.signed_card], [(b.signing_key.key_id, NOW_MS)])
    assert set(ring.peers) == {"JPN-ISA", "PHL-DFA"}
    with pytest.raises(OpenError) as info:
        ring.signing_key("PHL-DFA", b.signing_key.key_id, NOW_MS)
    assert info.value.reason is Reason.KEY_REVOKED


# --- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize("suite", BOTH_SUITES, ids=lambda s: s.name)
def test_every_single_byte_change_to_a_card_is_refused(suite: Suite) -> None:
    signed = make_node("JPN-ISA", suite).signed_card
    for i in range(len(signed)):
        tampered = bytearray(signed)
        tampered[i] ^= 0x01
        with pytest.raises(OpenError) as info:
            verify_card(bytes(tampered))
        assert info.value.reason in (
            Reason.BAD_SIGNATURE,
            Reason.MALFORMED,
            Reason.UNSUPPORTED_VERSION,  # the version byte itself
        ), f"byte {i}"


def test_card_signature_by_another_key_is_a_bad_signature() -> None:
    node = make_node("JPN-ISA")
    card = card_pb2.SignedCard.FromString(node.signed_card)
    card.signatures[0].signature = signing_key("mallory").sign(b"anything")
    with pytest.raises(OpenError) as info:
        verify_card(card.SerializeToString())
    assert info.value.reason is Reason.BAD_SIGNATURE


def test_card_signed_only_by_a_key_it_does_not_list_is_refused() -> None:
    node = make_node("JPN-ISA")
    with pytest.raises(OpenError) as info:
        verify_card(sign_card_bytes(_card(node), signing_key("mallory")))
    assert info.value.reason is Reason.BAD_SIGNATURE


def test_card_with_a_wrong_key_id_is_malformed() -> None:
    node = make_node("JPN-ISA")
    card = _card(node)
    card.encryption_keys[0].key_id = bytes(16)
    with pytest.raises(OpenError) as info:
        verify_card(sign_card_bytes(card, node.signing_key))
    assert info.value.reason is Reason.MALFORMED


def test_card_with_a_wrong_signing_key_id_is_malformed() -> None:
    node = make_node("JPN-ISA")
    card = _card(node)
    card.signing_keys[0].key_id = signing_key("other").key_id
    with pytest.raises(OpenError) as info:
        verify_card(sign_card_bytes(card, node.signing_key))
    assert info.value.reason is Reason.MALFORMED


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda c: setattr(c, "version", 2), Reason.UNSUPPORTED_VERSION),
        (lambda c: setattr(c, "node_id", "jpn-isa"), Reason.MALFORMED),
        (lambda c: setattr(c, "node_id", "JPN-ISA\n"), Reason.MALFORMED),
        (lambda c: setattr(c, "country", "JAPAN"), Reason.MALFORMED),
        (lambda c: setattr(c, "country", "JPN\n"), Reason.MALFORMED),
        (lambda c: c.ClearField("encryption_keys"), Reason.MALFORMED),
        (lambda c: setattr(c, "tls_certificate", b"another certificate"), Reason.MALFORMED),
        (lambda c: setattr(c, "tls_cert_sha256", b"short"), Reason.MALFORMED),
        (lambda c: c.encryption_keys.append(c.encryption_keys[0]), Reason.MALFORMED),
        (lambda c: setattr(c.signing_keys[0], "algorithm", 3), Reason.MALFORMED),
        (lambda c: setattr(c.encryption_keys[0], "public_key", b"\x01" * 31), Reason.MALFORMED),
        (lambda c: setattr(c.encryption_keys[0], "not_after_ms", 1), Reason.MALFORMED),
    ],
    ids=[
        "version",
        "node_id",
        "node_id_trailing_newline",
        "country",
        "country_trailing_newline",
        "no_encryption_key",
        "tls_certificate_mismatch",
        "tls_hash_length",
        "duplicate_key",
        "signing_key_algorithm",
        "short_public_key",
        "empty_validity_window",
    ],
)
def test_properly_signed_but_invalid_card_is_refused(change, reason: Reason) -> None:
    node = make_node("JPN-ISA", Suite.X25519)
    card = _card(node)
    change(card)
    with pytest.raises(OpenError) as info:
        verify_card(sign_card_bytes(card, node.signing_key))
    assert info.value.reason is reason


def test_card_larger_than_the_limit_is_oversized() -> None:
    node = make_node("JPN-ISA")
    card = _card(node)
    card.display_name = "x" * MAX_CARD_BYTES
    with pytest.raises(OpenError) as info:
        verify_card(sign_card_bytes(card, node.signing_key))
    assert info.value.reason is Reason.OVERSIZED


# --- rotation ---------------------------------------------------------------------------


def test_rotation_signed_by_the_pinned_current_key_is_accepted() -> None:
    node = make_node("JPN-ISA")
    successor = rotated(node)
    ring = pinned_keyring(node)
    card = ring.rotate(successor.signed_card)
    assert ring.get("JPN-ISA") == card
    assert card.serial == 2
    assert card.current_signing_key.public == successor.signing_key.public
    assert verify_rotation(node.card, successor.signed_card).serial == 2


def test_rotation_of_encryption_key_only_is_accepted() -> None:
    node = make_node("JPN-ISA")
    successor = rotated(node, new_signing=False)
    ring = pinned_keyring(node)
    card = ring.rotate(successor.signed_card)
    assert card.current_encryption_key.key_id == successor.encryption_keys[0].key_id


def test_self_signed_successor_is_refused_as_unknown_key() -> None:
    node = make_node("JPN-ISA")
    ring = pinned_keyring(node)
    with pytest.raises(OpenError) as info:
        ring.rotate(rotated(node, signed_by_previous=False).signed_card)
    assert info.value.reason is Reason.UNKNOWN_KEY
    assert ring.get("JPN-ISA").fingerprint == node.fingerprint


@pytest.mark.parametrize("serial", [0, 1])
def test_successor_whose_serial_is_not_higher_is_refused(serial: int) -> None:
    node = make_node("JPN-ISA")
    ring = pinned_keyring(node)
    with pytest.raises(OpenError):
        ring.rotate(rotated(node, serial=serial).signed_card)
    assert ring.get("JPN-ISA").fingerprint == node.fingerprint


def test_successor_signed_by_a_revoked_pinned_key_is_refused() -> None:
    node = make_node("JPN-ISA")
    ring = pinned_keyring(node)
    ring.revoke(_revoke(node, node.signing_key.key_id))
    with pytest.raises(OpenError) as info:
        ring.rotate(rotated(node).signed_card)
    assert info.value.reason is Reason.UNKNOWN_KEY
    assert ring.get("JPN-ISA").fingerprint == node.fingerprint


def test_rotation_for_a_node_that_is_not_pinned_is_refused() -> None:
    node = make_node("JPN-ISA")
    ring = pinned_keyring(make_node("PHL-DFA"))
    with pytest.raises(OpenError) as info:
        ring.rotate(rotated(node).signed_card)
    assert info.value.reason is Reason.UNKNOWN_SENDER
    assert ring.get("JPN-ISA") is None


def test_successor_naming_another_node_is_refused() -> None:
    phl = make_node("PHL-DFA")
    impostor = rotated(make_node("JPN-ISA"))
    with pytest.raises(OpenError):
        verify_rotation(phl.card, impostor.signed_card)


def test_successor_signed_by_a_stranger_claiming_the_node_id_is_refused() -> None:
    node = make_node("JPN-ISA")
    stranger = make_node("JPN-ISA", generation=1)
    ring = pinned_keyring(node)
    with pytest.raises(OpenError) as info:
        ring.rotate(rotated(stranger).signed_card)
    assert info.value.reason is Reason.UNKNOWN_KEY


# --- revocation -------------------------------------------------------------------------


def test_revocation_signed_by_the_node_verifies() -> None:
    node = make_node("JPN-ISA")
    signed = _revoke(node, node.encryption_keys[0].key_id, at_ms=NOW_MS - 5)
    rev = verify_revocation(signed, node.card)
    assert (rev.node_id, rev.key_id, rev.revoked_at_ms) == (
        "JPN-ISA",
        node.encryption_keys[0].key_id,
        NOW_MS - 5,
    )
    assert rev.reason == "key compromised"


def test_keyring_revoke_records_the_key_and_when() -> None:
    node = make_node("JPN-ISA")
    ring = pinned_keyring(node)
    ring.revoke(_revoke(node, node.signing_key.key_id, at_ms=NOW_MS - 5))
    assert ring.revoked == {node.signing_key.key_id: NOW_MS - 5}


def test_revoked_signing_key_is_refused_whatever_the_date() -> None:
    node = make_node("JPN-ISA")
    ring = pinned_keyring(node)
    kid = node.signing_key.key_id
    assert ring.signing_key("JPN-ISA", kid, NOW_MS) == node.signing_key.public
    ring.revoke(_revoke(node, kid, at_ms=NOW_MS))
    for at in (NOW_MS - 30 * 24 * 3600 * 1000, NOW_MS, NOW_MS + 1):
        with pytest.raises(OpenError) as info:
            ring.signing_key("JPN-ISA", kid, at)
        assert info.value.reason is Reason.KEY_REVOKED


def test_revocation_signed_by_a_key_not_on_the_card_is_refused() -> None:
    node = make_node("JPN-ISA")
    ring = pinned_keyring(node)
    with pytest.raises(OpenError) as info:
        ring.revoke(_revoke(node, node.signing_key.key_id, signer=signing_key("mallory")))
    assert info.value.reason is Reason.UNKNOWN_KEY
    assert ring.revoked == {}


def test_revocation_with_a_bad_signature_is_refused() -> None:
    node = make_node("JPN-ISA")
    sr = card_pb2.SignedRevocation.FromString(_revoke(node, node.signing_key.key_id))
    sr.signature.signature = bytes(64)
    ring = pinned_keyring(node)
    with pytest.raises(OpenError) as info:
        ring.revoke(sr.SerializeToString())
    assert info.value.reason is Reason.BAD_SIGNATURE
    assert ring.revoked == {}


def test_revocation_of_a_key_not_on_the_card_is_refused() -> None:
    node = make_node("JPN-ISA")
    ring = pinned_keyring(node)
    with pytest.raises(OpenError) as info:
        ring.revoke(_revoke(node, signing_key("other").key_id))
    assert info.value.reason is Reason.UNKNOWN_KEY


def test_revocation_for_another_node_is_refused() -> None:
    jpn, phl = make_node("JPN-ISA"), make_node("PHL-DFA")
    signed = sign_revocation(
        node_id="JPN-ISA",
        revoked_key_id=jpn.signing_key.key_id,
        revoked_at_ms=NOW_MS,
        reason="",
        signer=phl.signing_key,
    )
    with pytest.raises(OpenError):
        verify_revocation(signed, phl.card)


def test_revocation_for_a_node_that_is_not_pinned_is_refused() -> None:
    node = make_node("JPN-ISA")
    ring = Keyring()
    with pytest.raises(OpenError) as info:
        ring.revoke(_revoke(node, node.signing_key.key_id))
    assert info.value.reason is Reason.UNKNOWN_SENDER


def test_garbage_revocation_is_malformed() -> None:
    with pytest.raises(OpenError) as info:
        Keyring().revoke(b"\xff\xff")
    assert info.value.reason is Reason.MALFORMED


def test_revoked_key_cannot_revoke_the_other_keys_of_its_node() -> None:
    node = make_node("JPN-ISA")
    successor = rotated(node, keep_old_signing=True)  # new key first, stolen key kept
    ring = pinned_keyring(node)
    ring.rotate(successor.signed_card)
    stolen = node.signing_key
    ring.revoke(_revoke(node, stolen.key_id))
    with pytest.raises(OpenError) as info:
        ring.revoke(_revoke(node, successor.signing_key.key_id, signer=stolen))
    assert info.value.reason is Reason.KEY_REVOKED
    assert successor.signing_key.key_id not in ring.revoked


def test_revoked_encryption_key_is_dropped_from_the_card_the_keyring_hands_out() -> None:
    node = make_node("JPN-ISA")
    successor = rotated(node, new_signing=False)  # new encryption key first, old one kept
    ring = pinned_keyring(node)
    ring.rotate(successor.signed_card)
    new_key, old_key = successor.encryption_keys
    ring.revoke(_revoke(node, new_key.key_id))
    card = ring.require("JPN-ISA")
    assert [k.key_id for k in card.encryption_keys] == [old_key.key_id]
    assert card.current_encryption_key.key_id == old_key.key_id


def test_card_with_every_encryption_key_revoked_has_no_current_key() -> None:
    node = make_node("JPN-ISA")
    ring = pinned_keyring(node)
    ring.revoke(_revoke(node, node.encryption_keys[0].key_id))
    card = ring.require("JPN-ISA")
    with pytest.raises(ValueError, match="no usable encryption key"):
        _ = card.current_encryption_key


def test_keyring_rebuilt_from_the_store_drops_revoked_encryption_keys() -> None:
    node = rotated(make_node("JPN-ISA"), new_signing=False)
    new_key, old_key = node.encryption_keys
    ring = Keyring.from_cards([node.signed_card], [(new_key.key_id, NOW_MS)])
    assert ring.require("JPN-ISA").current_encryption_key.key_id == old_key.key_id


def test_pinning_keeps_earlier_revocations_of_the_cards_keys() -> None:
    node = make_node("JPN-ISA")
    ring = Keyring(revoked={node.encryption_keys[0].key_id: NOW_MS})
    card = ring.pin(node.signed_card, node.fingerprint)
    assert card.encryption_keys == ()


# --- announced cards ---------------------------------------------------------------------


def test_announced_card_bytes_are_the_issued_bytes():
    node = make_node("PHL-DFA", Suite.X25519)
    embedded = card_pb2.SignedCard.FromString(node.signed_card)
    assert announced_card_bytes(embedded) == node.signed_card


def test_announced_card_bytes_do_not_depend_on_how_the_sender_encoded_them():
    """Fields reordered, an unknown field in the SignedCard and in a signature: the pinned
    bytes are rebuilt from card and signatures, so card bytes and fingerprint are the
    sender's and the SignedCard is the one every implementation pins."""
    node = make_node("PHL-DFA", Suite.X25519)
    sc = card_pb2.SignedCard.FromString(node.signed_card)

    def field(number: int, value: bytes) -> bytes:  # length-delimited, short values only
        assert len(value) < 128
        return bytes([number << 3 | 2, len(value)]) + value

    # signature (2) before key_id (1) and an unknown field 3; then an unknown field 3 in
    # the SignedCard; then card (1) after signatures (2).
    odd_sig = field(2, sc.signatures[0].signature) + field(1, sc.signatures[0].key_id)
    reencoded = (
        field(2, odd_sig + b"\x18\x07")
        + b"\x18\x01"
        + card_pb2.SignedCard(card=sc.card).SerializeToString()
    )
    embedded = card_pb2.SignedCard.FromString(reencoded)
    assert embedded.SerializeToString() != node.signed_card
    pinned = announced_card_bytes(embedded)
    assert pinned == node.signed_card
    assert verify_card(pinned).fingerprint == card_fingerprint(sc.card)
