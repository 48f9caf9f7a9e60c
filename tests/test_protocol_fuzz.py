"""Fuzzing the verifiers: random and mutated input never escapes as anything but
OpenError, and nothing modified is ever accepted.

An envelope opens only if its bytes are exactly those of a valid envelope (the
original, or for field swaps the other envelope when every field was taken from it);
only the canonical encoding opens, so even a change to the outer protobuf framing
alone is refused. Receipts and cards carry their signed content as exact bytes inside
an unsigned wrapper, so for them the property is that the signed bytes are unchanged.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_helpers import (
    BOTH_SUITES,
    NOW_MS,
    make_node,
    ping_body,
    pinned_keyring,
    seed,
    typical_body,
)

from exchange_node.pb.exchange.v1 import card_pb2, envelope_pb2
from exchange_node.protocol.cards import sign_revocation, verify_card
from exchange_node.protocol.envelope import open_envelope, seal
from exchange_node.protocol.errors import OpenError
from exchange_node.protocol.keyring import Keyring
from exchange_node.protocol.keys import Suite
from exchange_node.protocol.receipts import Outcome, build_receipt, verify_receipt

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

JPN, IOM = make_node("JPN-ISA"), make_node("IOM-MNL")
RECIPIENTS = {suite: make_node("PHL-DFA", suite) for suite in BOTH_SUITES}
HEADER_FIELDS = [f.name for f in envelope_pb2.EnvelopeHeader.DESCRIPTOR.fields]


def _envelopes(suite: Suite) -> tuple[bytes, bytes]:
    """Two valid envelopes to PHL-DFA that differ in every field they can."""
    phl = RECIPIENTS[suite]
    a = seal(typical_body(), sender=JPN.identity, recipient=phl.card, now_ms=NOW_MS)
    b = seal(ping_body(), sender=IOM.identity, recipient=phl.card, now_ms=NOW_MS - 1000)
    return a.data, b.data


ENVELOPES = {suite: _envelopes(suite) for suite in BOTH_SUITES}
RING = pinned_keyring(JPN, IOM)


def _open(suite: Suite, data: bytes):
    return open_envelope(data, me=RECIPIENTS[suite].identity, keyring=RING, now_ms=NOW_MS)


def _check_envelope(suite: Suite, mutated: bytes, originals: tuple[bytes, ...] = ()) -> None:
    """The property: refused with OpenError unless ``mutated`` is exactly one of the
    ``originals`` (default: the first envelope)."""
    originals = originals or ENVELOPES[suite][:1]
    try:
        opened = _open(suite, mutated)
    except OpenError:
        return
    assert mutated in originals, "a modified envelope opened"
    assert opened.envelope_hash == hashlib.sha256(mutated).digest()


suites = pytest.mark.parametrize("suite", BOTH_SUITES, ids=lambda s: s.name)


# --- mutation strategies ----------------------------------------------------------------


@st.composite
def bit_flips(draw, data: bytes) -> bytes:
    out = bytearray(data)
    positions = draw(st.lists(st.integers(0, len(data) * 8 - 1), min_size=1, max_size=8))
    for bit in positions:
        out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@st.composite
def truncations(draw, data: bytes) -> bytes:
    start = draw(st.integers(0, len(data) - 1))
    end = draw(st.integers(start + 1, len(data)))
    return data[:start] + data[end:]  # drops a slice, which includes cutting the tail


@st.composite
def insertions(draw, data: bytes) -> bytes:
    at = draw(st.integers(0, len(data)))
    extra = draw(st.binary(min_size=1, max_size=64))
    return data[:at] + extra + data[at:]


@st.composite
def field_swaps(draw, pair: tuple[bytes, bytes]) -> bytes:
    """Envelope A with some header fields and/or outer fields taken from envelope B
    (taking all of them gives B itself, which is valid)."""
    a, b = (envelope_pb2.Envelope.FromString(d) for d in pair)
    ha, hb = (envelope_pb2.EnvelopeHeader.FromString(e.header) for e in (a, b))
    for name in draw(st.lists(st.sampled_from(HEADER_FIELDS), unique=True)):
        setattr(ha, name, getattr(hb, name))
    header = ha.SerializeToString()
    if draw(st.booleans()):
        header = b.header
    sealed = b.sealed if draw(st.booleans()) else a.sealed
    return envelope_pb2.Envelope(header=header, sealed=sealed).SerializeToString()


# --- envelopes --------------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=2048))
def test_random_bytes_only_ever_raise_open_error(data: bytes) -> None:
    for suite in BOTH_SUITES:
        with pytest.raises(OpenError):
            _open(suite, data)


@suites
@FUZZ
@given(data=st.data())
def test_bit_flipped_envelope_is_refused(suite: Suite, data: st.DataObject) -> None:
    _check_envelope(suite, data.draw(bit_flips(ENVELOPES[suite][0])))


@suites
@FUZZ
@given(data=st.data())
def test_truncated_envelope_is_refused(suite: Suite, data: st.DataObject) -> None:
    _check_envelope(suite, data.draw(truncations(ENVELOPES[suite][0])))


@suites
@FUZZ
@given(data=st.data())
def test_envelope_with_inserted_bytes_is_refused(suite: Suite, data: st.DataObject) -> None:
    _check_envelope(suite, data.draw(insertions(ENVELOPES[suite][0])))


@suites
@FUZZ
@given(data=st.data())
def test_envelope_with_fields_from_another_envelope_is_refused(
    suite: Suite, data: st.DataObject
) -> None:
    _check_envelope(suite, data.draw(field_swaps(ENVELOPES[suite])), ENVELOPES[suite])


# --- receipts ---------------------------------------------------------------------------

BATCH_ID = seed("batch", 16)
HASHES = [seed(f"hash {i}", 32) for i in range(3)]
PHL = RECIPIENTS[Suite.MLKEM768_X25519]
RECEIPT = build_receipt(
    batch_id=BATCH_ID,
    receiver="PHL-DFA",
    sender="JPN-ISA",
    received_at_ms=NOW_MS,
    outcomes=[Outcome(h, seed(f"m{i}", 16), 1) for i, h in enumerate(HASHES)],
    signing_key=PHL.signing_key,
    checkpoint=b"phl-dfa.example/log\n7\nAAAA\n",
)
RECEIPT_RING = pinned_keyring(PHL)


def _verify_receipt(data: bytes):
    return verify_receipt(
        data,
        keyring=RECEIPT_RING,
        receiver="PHL-DFA",
        sender="JPN-ISA",
        batch_id=BATCH_ID,
        envelope_hashes=HASHES,
    )


def _check_receipt(mutated: bytes) -> None:
    try:
        verified = _verify_receipt(mutated)
    except OpenError:
        return
    original = envelope_pb2.SignedReceipt.FromString(RECEIPT)
    assert envelope_pb2.SignedReceipt.FromString(mutated).receipt == original.receipt
    assert verified.receipt.SerializeToString() == original.receipt


@FUZZ
@given(data=st.binary(max_size=1024))
def test_random_receipt_bytes_only_ever_raise_open_error(data: bytes) -> None:
    with pytest.raises(OpenError):
        _verify_receipt(data)


@FUZZ
@given(data=st.data())
def test_mutated_receipt_is_refused(data: st.DataObject) -> None:
    mutate = data.draw(st.sampled_from([bit_flips, truncations, insertions]))
    _check_receipt(data.draw(mutate(RECEIPT)))


# --- cards and revocations --------------------------------------------------------------

CARD = RECIPIENTS[Suite.X25519].signed_card
CARD_BYTES = card_pb2.SignedCard.FromString(CARD).card


def _check_card(mutated: bytes) -> None:
    try:
        card = verify_card(mutated)
    except OpenError:
        return
    assert card.card_bytes == CARD_BYTES


@FUZZ
@given(data=st.binary(max_size=2048))
def test_random_card_bytes_only_ever_raise_open_error(data: bytes) -> None:
    with pytest.raises(OpenError):
        verify_card(data)


@FUZZ
@given(data=st.data())
def test_mutated_card_is_refused(data: st.DataObject) -> None:
    mutate = data.draw(st.sampled_from([bit_flips, truncations, insertions]))
    _check_card(data.draw(mutate(CARD)))


REVOCATION = sign_revocation(
    node_id="JPN-ISA",
    revoked_key_id=JPN.signing_key.key_id,
    revoked_at_ms=NOW_MS,
    reason="key compromised",
    signer=JPN.signing_key,
)


@FUZZ
@given(data=st.data())
def test_mutated_or_random_revocation_only_ever_raises_open_error(data: st.DataObject) -> None:
    mutate = data.draw(st.sampled_from([bit_flips, truncations, insertions]))
    candidate = data.draw(st.one_of(st.binary(max_size=512), mutate(REVOCATION)))
    ring: Keyring = pinned_keyring(JPN)
    try:
        rev = ring.revoke(candidate)
    except OpenError:
        return
    assert (rev.key_id, rev.revoked_at_ms) == (JPN.signing_key.key_id, NOW_MS)
