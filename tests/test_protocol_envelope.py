"""Sealing and opening envelopes: the round trip, the evidence kept, and one crafted
input for every reason an envelope is refused."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from protocol_helpers import (
    BOTH_SUITES,
    HOUR_MS,
    NOW_MS,
    Node,
    craft_envelope,
    fraud_notice_body,
    header_bytes,
    make_node,
    ping_body,
    pinned_keyring,
    rotated,
    seed,
    signing_key,
)

from exchange_node.pb.exchange.v1 import envelope_pb2, types_pb2
from exchange_node.protocol import ids
from exchange_node.protocol.cards import sign_revocation
from exchange_node.protocol.envelope import (
    MAX_BODY_BYTES,
    MAX_ENVELOPE_BYTES,
    Freshness,
    OpenedEnvelope,
    open_envelope,
    seal,
    signature_input,
    verify_evidence,
)
from exchange_node.protocol.errors import OpenError, Reason, wire_reason
from exchange_node.protocol.keyring import Keyring, LocalIdentity
from exchange_node.protocol.keys import Suite

FRESHNESS = Freshness()
BODY = fraud_notice_body()


def _nodes(suite: Suite) -> tuple[Node, Node]:
    """Sender JPN-ISA and recipient PHL-DFA whose encryption key is of ``suite``."""
    return make_node("JPN-ISA"), make_node("PHL-DFA", suite)


@dataclass
class Attempt:
    """One call of open_envelope: the bytes and everything the receiver holds."""

    data: bytes
    me: LocalIdentity
    keyring: Keyring
    now_ms: int = NOW_MS
    expected_sender: str | None = None
    freshness: Freshness = field(default_factory=Freshness)

    def open(self) -> OpenedEnvelope:
        return open_envelope(
            self.data,
            me=self.me,
            keyring=self.keyring,
            now_ms=self.now_ms,
            freshness=self.freshness,
            expected_sender=self.expected_sender,
        )


def _attempt(suite: Suite, data: bytes | None = None, **kw) -> Attempt:
    """An attempt by PHL-DFA, which pinned JPN-ISA and IOM-MNL, to open ``data``
    (default: a fresh envelope sealed by JPN-ISA)."""
    jpn, phl = _nodes(suite)
    if data is None:
        data = seal(BODY, sender=jpn.identity, recipient=phl.card, now_ms=NOW_MS).data
    return Attempt(data, phl.identity, pinned_keyring(jpn, make_node("IOM-MNL")), **kw)


def _replace_sealed(data: bytes, change: Callable[[bytearray], None]) -> bytes:
    env = envelope_pb2.Envelope.FromString(data)
    sealed = bytearray(env.sealed)
    change(sealed)
    return envelope_pb2.Envelope(header=env.header, sealed=bytes(sealed)).SerializeToString()


def _flip(index: int) -> Callable[[bytearray], None]:
    def change(buf: bytearray) -> None:
        buf[index] ^= 0x01

    return change


# --- round trip -------------------------------------------------------------------------


@pytest.mark.parametrize("suite", BOTH_SUITES, ids=lambda s: s.name)
def test_sealed_envelope_opens_with_its_header_and_body(suite: Suite) -> None:
    jpn, phl = _nodes(suite)
    mid = seed("round-trip", 16)
    sealed = seal(BODY, sender=jpn.identity, recipient=phl.card, now_ms=NOW_MS, message_id=mid)
    opened = _attempt(suite, sealed.data).open()

    h = opened.header
    assert (h.version, h.message_id, h.sender, h.recipient) == (1, mid, "JPN-ISA", "PHL-DFA")
    assert h.created_at_ms == NOW_MS
    assert h.sender_key_id == jpn.signing_key.key_id
    assert h.recipient_key_id == phl.encryption_keys[0].key_id
    assert h.suite == suite.value
    assert (opened.sender, opened.message_id) == ("JPN-ISA", mid)
    assert opened.body_bytes == BODY
    assert opened.body.fraud_notice.document.document_number == "P1234567A"
    assert opened.envelope_hash == sealed.envelope_hash == hashlib.sha256(sealed.data).digest()
    assert sealed.message_id == mid


@pytest.mark.parametrize("suite", BOTH_SUITES, ids=lambda s: s.name)
def test_hpke_enc_has_the_documented_size(suite: Suite) -> None:
    jpn, phl = _nodes(suite)
    sealed = seal(b"", sender=jpn.identity, recipient=phl.card, now_ms=NOW_MS)
    env = envelope_pb2.Envelope.FromString(sealed.data)
    enc_len = 1120 if suite is Suite.MLKEM768_X25519 else 32
    signed_body_len = len(envelope_pb2.SignedBody(signature=bytes(64)).SerializeToString())
    assert len(env.sealed) == enc_len + signed_body_len + 16  # AES-256-GCM tag


@pytest.mark.parametrize("suite", BOTH_SUITES, ids=lambda s: s.name)
def test_opened_envelope_is_evidence_anyone_can_verify(suite: Suite) -> None:
    jpn, _ = _nodes(suite)
    opened = _attempt(suite).open()
    public = jpn.signing_key.public
    assert verify_evidence(opened.header_bytes, opened.body_bytes, opened.signature, public)


@pytest.mark.parametrize("suite", BOTH_SUITES, ids=lambda s: s.name)
def test_evidence_with_another_body_or_header_does_not_verify(suite: Suite) -> None:
    jpn, phl = _nodes(suite)
    opened = _attempt(suite).open()
    public = jpn.signing_key.public
    other_header = header_bytes(jpn, phl, created_at_ms=NOW_MS + 1)
    assert not verify_evidence(opened.header_bytes, ping_body(), opened.signature, public)
    assert not verify_evidence(other_header, opened.body_bytes, opened.signature, public)
    assert not verify_evidence(
        opened.header_bytes, opened.body_bytes, opened.signature, signing_key("x").public
    )
    assert not verify_evidence(opened.header_bytes, opened.body_bytes, opened.signature, b"short")


def test_message_ids_are_ordered_ids_by_default() -> None:
    """docs/protocol.md 8.5: the sealing time in the first 6 bytes, then 80 random bits."""
    jpn, phl = _nodes(Suite.X25519)
    a = seal(BODY, sender=jpn.identity, recipient=phl.card, now_ms=NOW_MS)
    b = seal(BODY, sender=jpn.identity, recipient=phl.card, now_ms=NOW_MS)
    later = seal(BODY, sender=jpn.identity, recipient=phl.card, now_ms=NOW_MS + 1)
    assert len(a.message_id) == 16
    assert a.message_id[:6] == b.message_id[:6] == NOW_MS.to_bytes(6, "big")
    assert a.message_id[6:] != b.message_id[6:]
    assert max(a.message_id, b.message_id) < later.message_id


def test_the_ordered_id_example_of_the_protocol_document(monkeypatch) -> None:
    monkeypatch.setattr(ids.os, "urandom", lambda n: bytes.fromhex("00112233445566778899")[:n])
    assert ids.time_ordered_id(1764590400000).hex() == "019ad9c8b20000112233445566778899"
    # The clock wraps modulo 2**48 rather than failing.
    assert ids.time_ordered_id(2**48 + 5)[:6] == (5).to_bytes(6, "big")


def test_a_receiver_does_not_rely_on_the_id_structure() -> None:
    """An id of 16 random bytes (an older sender) or with a time far off opens the same."""
    jpn, phl = _nodes(Suite.X25519)
    for mid in (bytes(range(16)), b"\xff" * 16, (NOW_MS + 10**9).to_bytes(6, "big") + bytes(10)):
        sealed = seal(BODY, sender=jpn.identity, recipient=phl.card, now_ms=NOW_MS, message_id=mid)
        opened = open_envelope(
            sealed.data, me=phl.identity, keyring=pinned_keyring(jpn), now_ms=NOW_MS
        )
        assert opened.message_id == mid


def test_seal_refuses_a_body_over_the_limit() -> None:
    jpn, phl = _nodes(Suite.X25519)
    with pytest.raises(ValueError, match="limit"):
        seal(bytes(MAX_BODY_BYTES + 1), sender=jpn.identity, recipient=phl.card, now_ms=NOW_MS)


def test_seal_refuses_a_message_id_of_the_wrong_length() -> None:
    jpn, phl = _nodes(Suite.X25519)
    with pytest.raises(ValueError, match="16 bytes"):
        seal(BODY, sender=jpn.identity, recipient=phl.card, now_ms=NOW_MS, message_id=b"x")


def test_largest_body_fits_in_an_envelope() -> None:
    jpn, phl = _nodes(Suite.MLKEM768_X25519)
    body = fraud_notice_body("x" * (MAX_BODY_BYTES - 300))
    assert len(body) <= MAX_BODY_BYTES
    sealed = seal(body, sender=jpn.identity, recipient=phl.card, now_ms=NOW_MS)
    assert _attempt(Suite.MLKEM768_X25519, sealed.data).open().body_bytes == body


def test_envelope_from_the_expected_sender_opens() -> None:
    opened = _attempt(Suite.X25519, expected_sender="JPN-ISA").open()
    assert opened.sender == "JPN-ISA"


# --- key rotation on the receiving side -------------------------------------------------


@pytest.mark.parametrize("suite", BOTH_SUITES, ids=lambda s: s.name)
def test_envelope_sealed_to_the_previous_encryption_key_opens_during_rotation(
    suite: Suite,
) -> None:
    jpn, phl = _nodes(suite)
    sealed = seal(BODY, sender=jpn.identity, recipient=phl.card, now_ms=NOW_MS)
    phl_now = rotated(phl, new_signing=False, keep_old_encryption=True)
    assert phl_now.identity.encryption_keys[1] == phl.encryption_keys[0]
    opened = Attempt(sealed.data, phl_now.identity, pinned_keyring(jpn)).open()
    assert opened.body_bytes == BODY


@pytest.mark.parametrize("suite", BOTH_SUITES, ids=lambda s: s.name)
def test_envelope_sealed_to_the_new_encryption_key_opens_after_rotation(suite: Suite) -> None:
    jpn, phl = _nodes(suite)
    phl_now = rotated(phl, new_signing=False)
    sealed = seal(BODY, sender=jpn.identity, recipient=phl_now.card, now_ms=NOW_MS)
    assert envelope_pb2.EnvelopeHeader.FromString(
        envelope_pb2.Envelope.FromString(sealed.data).header
    ).recipient_key_id == (phl_now.encryption_keys[0].key_id)
    assert Attempt(sealed.data, phl_now.identity, pinned_keyring(jpn)).open().body_bytes == BODY


def test_envelope_signed_by_a_rotated_senders_earlier_key_opens_while_its_card_lists_it() -> None:
    jpn, phl = _nodes(Suite.X25519)
    sealed = seal(BODY, sender=jpn.identity, recipient=phl.card, now_ms=NOW_MS)
    ring = pinned_keyring(jpn)
    ring.rotate(rotated(jpn, keep_old_signing=True).signed_card)
    assert Attempt(sealed.data, phl.identity, ring).open().body_bytes == BODY


# --- one crafted input per reason -------------------------------------------------------


def _wrong_recipient(suite: Suite) -> Attempt:
    jpn, _ = _nodes(suite)
    iom = make_node("IOM-MNL", suite)
    data = seal(BODY, sender=jpn.identity, recipient=iom.card, now_ms=NOW_MS).data
    return _attempt(suite, data)


def _unknown_sender(suite: Suite) -> Attempt:
    a = _attempt(suite)
    a.keyring.remove("JPN-ISA")
    return a


def _sender_mismatch(suite: Suite) -> Attempt:
    return _attempt(suite, expected_sender="IOM-MNL")


def _unknown_key(suite: Suite) -> Attempt:
    _, phl = _nodes(suite)
    stranger = make_node("JPN-ISA", generation=1)  # claims JPN-ISA with its own keys
    return _attempt(
        suite, seal(BODY, sender=stranger.identity, recipient=phl.card, now_ms=NOW_MS).data
    )


def _key_revoked(suite: Suite) -> Attempt:
    jpn, _ = _nodes(suite)
    a = _attempt(suite)
    a.keyring.revoke(
        sign_revocation(
            node_id="JPN-ISA",
            revoked_key_id=jpn.signing_key.key_id,
            revoked_at_ms=NOW_MS + HOUR_MS,  # refused whatever date the envelope claims
            reason="key compromised",
            signer=jpn.signing_key,
        )
    )
    return a


def _key_expired_before(suite: Suite) -> Attempt:
    _, phl = _nodes(suite)
    jpn = make_node("JPN-ISA", signing_not_after_ms=NOW_MS - HOUR_MS)
    data = seal(BODY, sender=jpn.identity, recipient=phl.card, now_ms=NOW_MS).data
    return Attempt(data, phl.identity, pinned_keyring(jpn))


def _key_not_yet_valid(suite: Suite) -> Attempt:
    _, phl = _nodes(suite)
    jpn = make_node("JPN-ISA", signing_not_before_ms=NOW_MS + HOUR_MS)
    data = seal(BODY, sender=jpn.identity, recipient=phl.card, now_ms=NOW_MS).data
    return Attempt(data, phl.identity, pinned_keyring(jpn))


def _unknown_recipient_key(suite: Suite) -> Attempt:
    jpn, phl = _nodes(suite)
    data = seal(BODY, sender=jpn.identity, recipient=phl.card, now_ms=NOW_MS).data
    phl_now = rotated(phl, new_signing=False, keep_old_encryption=False)
    return Attempt(data, phl_now.identity, pinned_keyring(jpn))


def _suite_mismatch(suite: Suite) -> Attempt:
    jpn, phl = _nodes(suite)
    other = next(s for s in BOTH_SUITES if s is not suite)
    header = header_bytes(jpn, phl, suite=other.value)
    data = craft_envelope(header, BODY, signer=jpn.signing_key, to=phl.encryption_keys[0])
    return _attempt(suite, data)


def _decryption_failed_enc(suite: Suite) -> Attempt:
    return _attempt(suite, _replace_sealed(_attempt(suite).data, _flip(0)))


def _decryption_failed_ciphertext(suite: Suite) -> Attempt:
    return _attempt(suite, _replace_sealed(_attempt(suite).data, _flip(-20)))


def _decryption_failed_tag(suite: Suite) -> Attempt:
    return _attempt(suite, _replace_sealed(_attempt(suite).data, _flip(-1)))


def _decryption_failed_truncated(suite: Suite) -> Attempt:
    return _attempt(
        suite, _replace_sealed(_attempt(suite).data, lambda b: b.__delitem__(slice(-1, None)))
    )


def _sealed_under_another_header(suite: Suite) -> Attempt:
    # The HPKE info binds the header: a header swapped in from elsewhere fails to decrypt.
    jpn, phl = _nodes(suite)
    env = envelope_pb2.Envelope.FromString(_attempt(suite).data)
    header = header_bytes(jpn, phl, created_at_ms=NOW_MS - 1)
    return _attempt(
        suite, envelope_pb2.Envelope(header=header, sealed=env.sealed).SerializeToString()
    )


def _bad_signature(suite: Suite) -> Attempt:
    jpn, phl = _nodes(suite)
    header = header_bytes(jpn, phl)
    wrong = jpn.signing_key.sign(b"something else")
    data = craft_envelope(
        header, BODY, signer=jpn.signing_key, to=phl.encryption_keys[0], signature=wrong
    )
    return _attempt(suite, data)


def _signature_by_another_key(suite: Suite) -> Attempt:
    jpn, phl = _nodes(suite)
    header = header_bytes(jpn, phl)
    data = craft_envelope(header, BODY, signer=signing_key("mallory"), to=phl.encryption_keys[0])
    return _attempt(suite, data)


def _signature_over_another_header(suite: Suite) -> Attempt:
    jpn, phl = _nodes(suite)
    header = header_bytes(jpn, phl)
    sig = jpn.signing_key.sign(signature_input(header_bytes(jpn, make_node("IOM-MNL")), BODY))
    data = craft_envelope(
        header, BODY, signer=jpn.signing_key, to=phl.encryption_keys[0], signature=sig
    )
    return _attempt(suite, data)


def _empty_signature(suite: Suite) -> Attempt:
    jpn, phl = _nodes(suite)
    data = craft_envelope(
        header_bytes(jpn, phl),
        BODY,
        signer=jpn.signing_key,
        to=phl.encryption_keys[0],
        signature=b"",
    )
    return _attempt(suite, data)


def _expired(suite: Suite) -> Attempt:
    return _attempt(suite, now_ms=NOW_MS + FRESHNESS.max_age_ms + 1)


def _future_dated(suite: Suite) -> Attempt:
    jpn, phl = _nodes(suite)
    data = seal(
        BODY, sender=jpn.identity, recipient=phl.card, now_ms=NOW_MS + FRESHNESS.max_skew_ms + 1
    ).data
    return _attempt(suite, data)


def _garbage(suite: Suite) -> Attempt:
    return _attempt(suite, b"\xff\xfe\xfd not an envelope")


def _empty_body_content(suite: Suite) -> Attempt:
    jpn, phl = _nodes(suite)
    return _attempt(suite, seal(b"", sender=jpn.identity, recipient=phl.card, now_ms=NOW_MS).data)


def _body_does_not_parse(suite: Suite) -> Attempt:
    jpn, phl = _nodes(suite)
    return _attempt(
        suite, seal(b"\xff\xff\xff", sender=jpn.identity, recipient=phl.card, now_ms=NOW_MS).data
    )


def _signed_body_does_not_parse(suite: Suite) -> Attempt:
    jpn, phl = _nodes(suite)
    data = craft_envelope(
        header_bytes(jpn, phl),
        BODY,
        signer=jpn.signing_key,
        to=phl.encryption_keys[0],
        plaintext=b"\xff\xff",
    )
    return _attempt(suite, data)


def _header_field_missing(name: str) -> Callable[[Suite], Attempt]:
    def build(suite: Suite) -> Attempt:
        jpn, phl = _nodes(suite)
        header = header_bytes(jpn, phl, **{name: None})
        return _attempt(
            suite, craft_envelope(header, BODY, signer=jpn.signing_key, to=phl.encryption_keys[0])
        )

    return build


def _header_field_value(name: str, value: object) -> Callable[[Suite], Attempt]:
    def build(suite: Suite) -> Attempt:
        jpn, phl = _nodes(suite)
        header = header_bytes(jpn, phl, **{name: value})
        return _attempt(
            suite, craft_envelope(header, BODY, signer=jpn.signing_key, to=phl.encryption_keys[0])
        )

    return build


def _not_canonical(suite: Suite) -> Attempt:
    return _attempt(suite, _attempt(suite).data + b"\x18\x00")  # an unknown varint field


def _short_message_id(suite: Suite) -> Attempt:
    jpn, phl = _nodes(suite)
    header = header_bytes(jpn, phl, message_id=b"short")
    return _attempt(
        suite, craft_envelope(header, BODY, signer=jpn.signing_key, to=phl.encryption_keys[0])
    )


def _header_does_not_parse(suite: Suite) -> Attempt:
    env = envelope_pb2.Envelope.FromString(_attempt(suite).data)
    return _attempt(
        suite, envelope_pb2.Envelope(header=b"\xff\xff", sealed=env.sealed).SerializeToString()
    )


def _sealed_missing(suite: Suite) -> Attempt:
    env = envelope_pb2.Envelope.FromString(_attempt(suite).data)
    return _attempt(suite, envelope_pb2.Envelope(header=env.header).SerializeToString())


def _oversized(suite: Suite) -> Attempt:
    # An unknown field pads an otherwise valid envelope one byte past the limit.
    data = _attempt(suite).data
    pad = MAX_ENVELOPE_BYTES + 1 - len(data) - 1 - len(_varint(MAX_ENVELOPE_BYTES))
    filler = b"\x7a" + _varint(pad) + bytes(pad)
    assert len(data + filler) == MAX_ENVELOPE_BYTES + 1
    return _attempt(suite, data + filler)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _unsupported_version(suite: Suite) -> Attempt:
    jpn, phl = _nodes(suite)
    header = header_bytes(jpn, phl, version=2)
    return _attempt(
        suite, craft_envelope(header, BODY, signer=jpn.signing_key, to=phl.encryption_keys[0])
    )


CASES: dict[str, tuple[Callable[[Suite], Attempt], Reason]] = {
    "wrong_recipient": (_wrong_recipient, Reason.WRONG_RECIPIENT),
    "unknown_sender": (_unknown_sender, Reason.UNKNOWN_SENDER),
    "sender_mismatch": (_sender_mismatch, Reason.SENDER_MISMATCH),
    "unknown_signing_key": (_unknown_key, Reason.UNKNOWN_KEY),
    "revoked_signing_key": (_key_revoked, Reason.KEY_REVOKED),
    "signing_key_expired": (_key_expired_before, Reason.KEY_NOT_VALID),
    "signing_key_not_yet_valid": (_key_not_yet_valid, Reason.KEY_NOT_VALID),
    "recipient_rotated": (_unknown_recipient_key, Reason.UNKNOWN_RECIPIENT_KEY),
    "suite_mismatch": (_suite_mismatch, Reason.SUITE_MISMATCH),
    "flipped_enc": (_decryption_failed_enc, Reason.DECRYPTION_FAILED),
    "flipped_ciphertext": (_decryption_failed_ciphertext, Reason.DECRYPTION_FAILED),
    "flipped_tag": (_decryption_failed_tag, Reason.DECRYPTION_FAILED),
    "truncated_sealed": (_decryption_failed_truncated, Reason.DECRYPTION_FAILED),
    "header_swapped": (_sealed_under_another_header, Reason.DECRYPTION_FAILED),
    "bad_signature": (_bad_signature, Reason.BAD_SIGNATURE),
    "signature_by_another_key": (_signature_by_another_key, Reason.BAD_SIGNATURE),
    "signature_over_another_header": (_signature_over_another_header, Reason.BAD_SIGNATURE),
    "empty_signature": (_empty_signature, Reason.BAD_SIGNATURE),
    "expired": (_expired, Reason.EXPIRED),
    "future_dated": (_future_dated, Reason.FUTURE_DATED),
    "garbage": (_garbage, Reason.MALFORMED),
    "empty_body_content": (_empty_body_content, Reason.MALFORMED),
    "body_does_not_parse": (_body_does_not_parse, Reason.MALFORMED),
    "signed_body_does_not_parse": (_signed_body_does_not_parse, Reason.MALFORMED),
    "header_without_message_id": (_header_field_missing("message_id"), Reason.MALFORMED),
    "header_without_sender": (_header_field_missing("sender"), Reason.MALFORMED),
    "header_without_recipient": (_header_field_missing("recipient"), Reason.MALFORMED),
    "header_short_message_id": (_short_message_id, Reason.MALFORMED),
    "header_sender_with_newline": (_header_field_value("sender", "JPN-ISA\n"), Reason.MALFORMED),
    "header_recipient_with_newline": (
        _header_field_value("recipient", "PHL-DFA\n"),
        Reason.MALFORMED,
    ),
    "not_canonically_encoded": (_not_canonical, Reason.MALFORMED),
    "header_does_not_parse": (_header_does_not_parse, Reason.MALFORMED),
    "sealed_missing": (_sealed_missing, Reason.MALFORMED),
    "oversized": (_oversized, Reason.OVERSIZED),
    "unsupported_version": (_unsupported_version, Reason.UNSUPPORTED_VERSION),
}


@pytest.mark.parametrize("suite", BOTH_SUITES, ids=lambda s: s.name)
@pytest.mark.parametrize("case", CASES)
def test_crafted_envelope_is_refused_with_its_reason(case: str, suite: Suite) -> None:
    build, reason = CASES[case]
    with pytest.raises(OpenError) as info:
        build(suite).open()
    assert info.value.reason is reason, info.value.detail


@pytest.mark.parametrize("suite", BOTH_SUITES, ids=lambda s: s.name)
def test_every_refusal_has_the_same_opaque_message(suite: Suite) -> None:
    errors = []
    for build, _ in CASES.values():
        with pytest.raises(OpenError) as info:
            build(suite).open()
        errors.append(info.value)
    assert {str(e) for e in errors} == {"protocol input refused"}
    assert {e.reason for e in errors} == {reason for _, reason in CASES.values()}
    for e in errors:
        assert e.reason.value not in str(e)
        assert e.detail not in str(e)


def test_empty_bytes_are_refused() -> None:
    # Every field is absent, so the version reads as 0.
    with pytest.raises(OpenError) as info:
        _attempt(Suite.X25519, b"").open()
    assert info.value.reason in (Reason.MALFORMED, Reason.UNSUPPORTED_VERSION)


def test_crypto_failures_look_the_same_on_the_wire() -> None:
    assert wire_reason(Reason.DECRYPTION_FAILED) == wire_reason(Reason.BAD_SIGNATURE)
    assert wire_reason(Reason.BAD_SIGNATURE) == types_pb2.REASON_VERIFICATION_FAILED


# --- freshness boundaries ---------------------------------------------------------------


def test_envelope_dated_just_within_the_skew_opens() -> None:
    jpn, phl = _nodes(Suite.X25519)
    data = seal(
        BODY, sender=jpn.identity, recipient=phl.card, now_ms=NOW_MS + FRESHNESS.max_skew_ms
    ).data
    assert (
        _attempt(Suite.X25519, data).open().header.created_at_ms == NOW_MS + FRESHNESS.max_skew_ms
    )


def test_envelope_exactly_as_old_as_the_retention_window_opens() -> None:
    assert _attempt(Suite.X25519, now_ms=NOW_MS + FRESHNESS.max_age_ms).open().body_bytes == BODY


def test_freshness_limits_come_from_the_receiver() -> None:
    strict = Freshness(max_skew_ms=0, max_age_ms=1000)
    with pytest.raises(OpenError) as info:
        _attempt(Suite.X25519, now_ms=NOW_MS + 1001, freshness=strict).open()
    assert info.value.reason is Reason.EXPIRED
    jpn, phl = _nodes(Suite.X25519)
    data = seal(BODY, sender=jpn.identity, recipient=phl.card, now_ms=NOW_MS + 1).data
    with pytest.raises(OpenError) as info:
        _attempt(Suite.X25519, data, freshness=strict).open()
    assert info.value.reason is Reason.FUTURE_DATED


def test_signing_key_is_valid_up_to_but_not_at_its_not_after() -> None:
    _, phl = _nodes(Suite.X25519)
    jpn = make_node("JPN-ISA", signing_not_after_ms=NOW_MS + 1)
    ok = seal(BODY, sender=jpn.identity, recipient=phl.card, now_ms=NOW_MS).data
    late = seal(BODY, sender=jpn.identity, recipient=phl.card, now_ms=NOW_MS + 1).data
    assert Attempt(ok, phl.identity, pinned_keyring(jpn)).open().body_bytes == BODY
    with pytest.raises(OpenError) as info:
        Attempt(late, phl.identity, pinned_keyring(jpn)).open()
    assert info.value.reason is Reason.KEY_NOT_VALID


# --- canonical encoding -----------------------------------------------------------------


def _reencodings(data: bytes) -> dict[str, bytes]:
    env = envelope_pb2.Envelope.FromString(data)
    header = envelope_pb2.Envelope(header=env.header).SerializeToString()
    sealed = envelope_pb2.Envelope(sealed=env.sealed).SerializeToString()
    return {
        "unknown_field_appended": data + b"\x18\x00",
        "fields_reordered": sealed + header,
        "header_repeated": header + data,
    }


def test_only_the_canonical_encoding_of_an_envelope_opens() -> None:
    original = _attempt(Suite.X25519).data
    opened = []
    for name, variant in _reencodings(original).items():
        try:
            _attempt(Suite.X25519, variant).open()
            opened.append(name)
        except OpenError:
            pass
    assert opened == []


# --- revoked recipient keys -------------------------------------------------------------


def test_nothing_is_sealed_to_a_revoked_encryption_key() -> None:
    jpn, phl = _nodes(Suite.MLKEM768_X25519)
    ring = pinned_keyring(phl)
    ring.revoke(
        sign_revocation(
            node_id="PHL-DFA",
            revoked_key_id=phl.encryption_keys[0].key_id,
            revoked_at_ms=NOW_MS,
            reason="key compromised",
            signer=phl.signing_key,
        )
    )
    with pytest.raises((ValueError, OpenError)):
        seal(BODY, sender=jpn.identity, recipient=ring.require("PHL-DFA"), now_ms=NOW_MS)


def test_sealing_after_a_revocation_uses_the_remaining_encryption_key() -> None:
    jpn, phl = _nodes(Suite.X25519)
    phl_now = rotated(phl, new_signing=False)  # new encryption key first, old one kept
    ring = pinned_keyring(phl_now)
    new_key, old_key = phl_now.encryption_keys
    ring.revoke(
        sign_revocation(
            node_id="PHL-DFA",
            revoked_key_id=new_key.key_id,
            revoked_at_ms=NOW_MS,
            reason="key compromised",
            signer=phl_now.signing_key,
        )
    )
    sealed = seal(BODY, sender=jpn.identity, recipient=ring.require("PHL-DFA"), now_ms=NOW_MS)
    header = envelope_pb2.EnvelopeHeader.FromString(
        envelope_pb2.Envelope.FromString(sealed.data).header
    )
    assert header.recipient_key_id == old_key.key_id
