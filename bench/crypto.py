"""Protocol-core crypto throughput, beside the raw primitives it is built from.

Usage: python bench/crypto.py [--quick] [--seconds S]

For each HPKE suite it measures, in one run on one core:

- ``seal`` and ``open_envelope`` of a typical notice body (about 600 bytes);
- the primitives underneath, on the same sizes: Ed25519 sign and verify over the
  envelope signature input, HPKE single-shot encrypt and decrypt of the SignedBody;
- the ratio of each protocol operation to its primitives' ideal combined rate,
  ``1 / (1/sign + 1/encrypt)`` for seal and ``1 / (1/verify + 1/decrypt)`` for open
  (1.0 means the protocol core adds nothing to the cryptography);
- the crypto-only limit of one notice end to end on one core (sign + encrypt +
  decrypt + verify), the yardstick the end-to-end benchmark is held to.

Then a receipt for a batch of 200 envelopes: build (sign) plus verify.

Each figure is the best of five runs sharing about ``--seconds`` (1.5 s by default;
0.2 s with ``--quick``) of ``time.perf_counter``; the hardware and the load average
are printed too, since other work on the machine lowers every figure.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import cryptography
import google.protobuf
import machine  # bench/machine.py: the scripts run from bench/
from cryptography.hazmat.backends.openssl import backend as openssl_backend

from exchange_node.pb.exchange.v1 import envelope_pb2, notice_pb2
from exchange_node.protocol.cards import CardKey, issue_card, verify_card
from exchange_node.protocol.envelope import (
    hpke_info,
    open_envelope,
    seal,
    signature_input,
)
from exchange_node.protocol.keyring import Keyring, LocalIdentity
from exchange_node.protocol.keys import (
    EncryptionKey,
    SigningKey,
    Suite,
    ed25519_public_key,
    hpke_public_key,
)
from exchange_node.protocol.receipts import Outcome, build_receipt, verify_receipt

NOW_MS = 1_780_000_000_000
BATCH_SIZE = 200


# --- hardware ---------------------------------------------------------------------------


def hardware() -> list[tuple[str, str]]:
    return machine.rows(
        ("cryptography", f"{cryptography.__version__} ({openssl_backend.openssl_version_text()})"),
        ("protobuf", f"{google.protobuf.__version__}"),
    )


# --- measurement ------------------------------------------------------------------------


def _run(fn: Callable[[], object], seconds: float) -> float:
    count = 0
    chunk = 1
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(chunk):
            fn()
        count += chunk
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)
        # Grow chunks so the clock is read rarely, but stay well inside the deadline.
        chunk = max(1, min(chunk * 2, int(count / (now - start) * (deadline - now) / 4)))


def rate(fn: Callable[[], object], seconds: float, repeats: int = 5) -> float:
    """Calls per second of ``fn``: the best of ``repeats`` runs sharing ``seconds``
    (after one warm-up call). The best run is the one least disturbed by other load
    on the machine, as ``timeit`` recommends."""
    fn()
    return max(_run(fn, seconds / repeats) for _ in range(repeats))


def combined(*rates: float) -> float:
    """Rate of doing one of each operation in sequence: 1 / sum(1/rate)."""
    return 1 / sum(1 / r for r in rates)


# --- fixtures ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    sender: LocalIdentity
    recipient: LocalIdentity
    recipient_card_bytes: bytes
    sender_card_bytes: bytes


def node(node_id: str, country: str, suite: Suite) -> tuple[LocalIdentity, bytes]:
    sk, ek = SigningKey.generate(), EncryptionKey.generate(suite)
    card = issue_card(
        node_id=node_id,
        country=country,
        endpoint=f"https://{node_id.lower()}.example:8443",
        display_name=node_id,
        signing_keys=[CardKey(sk, NOW_MS - 86_400_000)],
        encryption_keys=[CardKey(ek, NOW_MS - 86_400_000)],
        tls_certificate=b"",
        serial=1,
        issued_at_ms=NOW_MS - 86_400_000,
    )
    return LocalIdentity(node_id, sk, (ek,)), card


def pair(suite: Suite) -> Pair:
    sender, sender_card = node("JPN-ISA", "JPN", suite)
    recipient, recipient_card = node("PHL-DFA", "PHL", suite)
    return Pair(sender, recipient, recipient_card, sender_card)


def typical_body() -> bytes:
    """A fraud detection notice of about 600 bytes, a typical notice."""
    return notice_pb2.Body(
        fraud_notice=notice_pb2.FraudDetectionNotice(
            notice_id=os.urandom(16),
            document=notice_pb2.DocumentRef(
                issuing_state="PHL",
                document_type="P",
                document_number="P1234567A",
                mrz=(
                    "P<PHLSPECIMEN<<MARIA<<<<<<<<<<<<<<<<<<<<<<<<\n"
                    "P1234567A1PHL8001014F3001019<<<<<<<<<<<<<<00"
                ),
            ),
            fraud_type=notice_pb2.FRAUD_TYPE_FORGED,
            detected_at_ms=NOW_MS - 3_600_000,
            detection_place="JPNRT",
            detecting_authority="Immigration Services Agency, Narita",
            remarks="Observed at primary inspection. " * 13,
        )
    ).SerializeToString()


# --- figures ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SuiteFigures:
    suite: Suite
    envelope_bytes: int
    seal: float
    open: float
    sign: float
    verify: float
    encrypt: float
    decrypt: float

    @property
    def seal_ratio(self) -> float:
        return self.seal / combined(self.sign, self.encrypt)

    @property
    def open_ratio(self) -> float:
        return self.open / combined(self.verify, self.decrypt)

    @property
    def crypto_limit(self) -> float:
        return combined(self.sign, self.encrypt, self.decrypt, self.verify)

    @property
    def core_limit(self) -> float:
        return combined(self.seal, self.open)


def measure_suite(suite: Suite, body: bytes, seconds: float) -> SuiteFigures:
    p = pair(suite)
    recipient_card = verify_card(p.recipient_card_bytes)
    ring = Keyring.from_cards([p.sender_card_bytes])

    sealed = seal(body, sender=p.sender, recipient=recipient_card, now_ms=NOW_MS).data
    envelope = envelope_pb2.Envelope.FromString(sealed)
    header = envelope.header
    message = signature_input(header, body)
    signature = p.sender.signing_key.sign(message)
    plaintext = envelope_pb2.SignedBody(body=body, signature=signature).SerializeToString()
    info = hpke_info(header)
    rkey = recipient_card.current_encryption_key
    public = hpke_public_key(rkey.algorithm, rkey.public)
    private = p.recipient.encryption_keys[0]
    ciphertext = suite.hpke.encrypt(plaintext, public, info=info)
    verifier = ed25519_public_key(p.sender.signing_key.public)

    def do_seal() -> object:
        return seal(body, sender=p.sender, recipient=recipient_card, now_ms=NOW_MS)

    def do_open() -> object:
        return open_envelope(sealed, me=p.recipient, keyring=ring, now_ms=NOW_MS)

    return SuiteFigures(
        suite=suite,
        envelope_bytes=len(sealed),
        seal=rate(do_seal, seconds),
        open=rate(do_open, seconds),
        sign=rate(lambda: p.sender.signing_key.sign(message), seconds),
        verify=rate(lambda: verifier.verify(signature, message), seconds),
        encrypt=rate(lambda: suite.hpke.encrypt(plaintext, public, info=info), seconds),
        decrypt=rate(lambda: private.decrypt(ciphertext, info), seconds),
    )


@dataclass(frozen=True)
class ReceiptFigures:
    build: float
    verify: float
    receipt_bytes: int

    @property
    def both(self) -> float:
        return combined(self.build, self.verify)


def measure_receipts(seconds: float) -> ReceiptFigures:
    receiver, receiver_card = node("PHL-DFA", "PHL", Suite.X25519)
    ring = Keyring.from_cards([receiver_card])
    batch_id = os.urandom(16)
    outcomes = [Outcome(os.urandom(32), os.urandom(16), 1) for _ in range(BATCH_SIZE)]
    hashes = [o.envelope_hash for o in outcomes]
    checkpoint = b"phl-dfa.example/log\n123456\n" + b"A" * 44 + b"\n\n\xe2\x80\x94 sig\n"

    def build() -> bytes:
        return build_receipt(
            batch_id=batch_id,
            receiver="PHL-DFA",
            sender="JPN-ISA",
            received_at_ms=NOW_MS,
            outcomes=outcomes,
            signing_key=receiver.signing_key,
            checkpoint=checkpoint,
        )

    signed = build()

    def verify() -> object:
        return verify_receipt(
            signed,
            keyring=ring,
            receiver="PHL-DFA",
            sender="JPN-ISA",
            batch_id=batch_id,
            envelope_hashes=hashes,
        )

    return ReceiptFigures(rate(build, seconds), rate(verify, seconds), len(signed))


# --- report -----------------------------------------------------------------------------


def per_second(r: float) -> str:
    return f"{r:>10,.0f}/s {1e6 / r:>8.1f} us"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about 0.2 s per figure")
    parser.add_argument("--seconds", type=float, help="seconds per figure (default 1.5)")
    args = parser.parse_args()
    seconds = args.seconds or (0.2 if args.quick else 1.5)

    print("exchange-node protocol crypto benchmark")
    for name, value in hardware():
        print(f"  {name:<13} {value}")
    body = typical_body()
    print(f"  body          {len(body)} bytes (fraud detection notice); {seconds} s per figure")
    print("  single thread; rates are per core")

    for suite in (Suite.MLKEM768_X25519, Suite.X25519):
        f = measure_suite(suite, body, seconds)
        print()
        print(f"suite {suite.name}  (envelope {f.envelope_bytes} bytes)")
        print(f"  seal                    {per_second(f.seal)}")
        print(f"  open                    {per_second(f.open)}")
        print(f"  ed25519 sign            {per_second(f.sign)}")
        print(f"  ed25519 verify          {per_second(f.verify)}")
        print(f"  hpke encrypt            {per_second(f.encrypt)}")
        print(f"  hpke decrypt            {per_second(f.decrypt)}")
        print(
            f"  seal / (sign+encrypt)   {f.seal_ratio:>10.2f}"
            f"   (ideal {combined(f.sign, f.encrypt):,.0f}/s)"
        )
        print(
            f"  open / (verify+decrypt) {f.open_ratio:>10.2f}"
            f"   (ideal {combined(f.verify, f.decrypt):,.0f}/s)"
        )
        print(f"  crypto-only notice limit{per_second(f.crypto_limit)}  (sign+enc+dec+verify)")
        print(
            f"  seal+open per notice    {per_second(f.core_limit)}"
            f"  ({f.core_limit / f.crypto_limit:.2f} of the crypto-only limit)"
        )

    r = measure_receipts(seconds)
    print()
    print(f"receipt for a batch of {BATCH_SIZE} envelopes  ({r.receipt_bytes} bytes)")
    print(f"  build (sign)            {per_second(r.build)}")
    print(f"  verify                  {per_second(r.verify)}")
    print(
        f"  build+verify            {per_second(r.both)}"
        f"  ({1e6 / r.both / BATCH_SIZE:.2f} us per envelope)"
    )
    print()
    print(f"load average at the end: {machine.load_average()}")


if __name__ == "__main__":
    main()
