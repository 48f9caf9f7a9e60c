"""Witnessing peers' audit logs: every receipt carries the receiver's latest signed
checkpoint, and this node checks it against the last one it holds from that peer.

A checkpoint that the peer cannot prove consistent with the one held (its log was
truncated or rewritten and re-signed) is recorded as ``checkpoint.inconsistent``, kept
as evidence, and raises ``exchange_peer_checkpoint_inconsistent_total``. Anything that
is not an answer (the peer failing for now, the network, a malformed reply) leaves the
held checkpoint unchecked: it is logged and counted, and the next receipt asks again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from exchange_node.audit.checkpoint import parse_checkpoint
from exchange_node.audit.log import AuditLog
from exchange_node.errors import ExchangeError
from exchange_node.metrics import Metrics
from exchange_node.protocol.keyring import Keyring
from exchange_node.protocol.receipts import VerifiedReceipt

log = structlog.get_logger("exchange_node.witness")

FetchProof = Callable[[str, int, int], Awaitable[list[bytes]]]
"""(peer, first, second) -> the peer's consistency proof. Raises ``ExchangeError`` when
the peer says no such proof can exist; anything else it raises means "not now"."""


class Witness:
    def __init__(
        self,
        audit: AuditLog,
        keyring: Callable[[], Keyring],
        fetch_proof: FetchProof,
        executor: concurrent.futures.Executor,
        metrics: Metrics,
        clock: Callable[[], int],
    ) -> None:
        self._audit = audit
        self._keyring = keyring
        self._fetch_proof = fetch_proof
        self._executor = executor
        self._metrics = metrics
        self._clock = clock

    async def check(self, peer_id: str, receipt: VerifiedReceipt) -> None:
        """Check the checkpoint ``receipt`` carries against the last one held from the
        peer, and record it. Never raises: a failure leaves it unchecked."""
        card = self._keyring().require(peer_id)
        entry = card.signing_key(receipt.receipt.signer_key_id)
        if entry is None:
            return
        loop = asyncio.get_running_loop()
        note = receipt.checkpoint.decode()
        try:
            new_size = parse_checkpoint(note)[0].tree_size
            held = await loop.run_in_executor(self._executor, self._audit.peer_checkpoint, peer_id)
        except Exception as exc:
            self._unchecked(peer_id, str(exc))
            return
        # The proof is fetched here, on the loop, before the check goes to the audit
        # thread: a slow peer must never hold that thread.
        proofs: dict[tuple[int, int], list[bytes] | ExchangeError] = {}
        if held is not None and held.tree_size != new_size and min(held.tree_size, new_size) > 0:
            sizes = (min(held.tree_size, new_size), max(held.tree_size, new_size))
            try:
                proofs[sizes] = await self._fetch_proof(peer_id, *sizes)
            except ExchangeError as exc:  # the peer says no proof can exist: recorded
                proofs[sizes] = exc
            except Exception as exc:
                # Not an answer (503, transport): the held checkpoint stays, the next
                # receipt brings the question again.
                self._unchecked(peer_id, getattr(exc, "detail", None) or str(exc))
                return

        def proof(first: int, second: int) -> list[bytes]:
            answer = proofs.get((first, second))
            if answer is None:  # not an ExchangeError: "not proved" needs the peer's answer
                raise LookupError(f"no consistency proof fetched for {first}->{second}")
            if isinstance(answer, ExchangeError):
                raise answer
            return answer

        try:
            result = await loop.run_in_executor(
                self._executor,
                lambda: self._audit.record_peer_checkpoint(
                    peer_id,
                    note,
                    Ed25519PublicKey.from_public_bytes(entry.public),
                    proof,
                    now=self._clock(),
                ),
            )
        except Exception as exc:
            self._unchecked(peer_id, str(exc))
            return
        if not result.consistent:
            self._metrics.checkpoint_alarm.labels(peer_id).inc()
            log.error(
                "audit.peer_checkpoint_inconsistent",
                peer=peer_id,
                reason=result.reason,
                old_size=result.old_size,
                new_size=result.new_size,
            )

    def _unchecked(self, peer_id: str, error: str) -> None:
        self._metrics.checkpoint_unchecked.labels(peer_id).inc()
        log.warning("audit.peer_checkpoint_unchecked", peer=peer_id, error=error)
