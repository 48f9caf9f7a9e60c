"""Pushing this node's checkpoints to the C2SP witnesses its config names, and keeping
their cosignatures.

After each checkpoint is signed, every ``[[witness.push]]`` target that has not
cosigned it gets one ``add-checkpoint`` request: ``old`` is the size that witness last
cosigned (from the cosignatures kept, 0 at first), with the consistency proof from
there. A 409 states the size the witness holds; the request is made again from that
size (at most :data:`MAX_ATTEMPTS` times). A 200 answer's lines are verified against the
witness's configured key; its cosignature is kept with a ``witness.cosigned`` leaf in
one transaction (``witness.keep``). Anything else is logged and counted, and the next
checkpoint tries again. Never raises.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from exchange_node.audit import leaves
from exchange_node.audit.checkpoint import SignedCheckpoint
from exchange_node.audit.cosignature import (
    COSIGNATURE_V1_ALG,
    VerifierKey,
    parse_vkey,
    verify_cosignatures,
)
from exchange_node.audit.log import AuditLog
from exchange_node.audit.tlog_witness import (
    SIZE_CONTENT_TYPE,
    encode_request,
    parse_cosignatures,
    parse_size_body,
)
from exchange_node.config import WitnessTarget
from exchange_node.delivery.client import PeerClient
from exchange_node.errors import ExchangeError, ValidationError
from exchange_node.metrics import Metrics
from exchange_node.store.records import CosignatureRow

log = structlog.get_logger("exchange_node.witnesses")

MAX_ATTEMPTS = 3
LABEL = "witness.keep"


@dataclass(frozen=True)
class PushWitness:
    """A witness to push to: its cosignature/v1 key, and a pinned ``peer`` or ``url``."""

    vkey: VerifierKey
    peer: str = ""
    url: str = ""

    @classmethod
    def from_config(cls, target: WitnessTarget) -> PushWitness:
        return cls(parse_vkey(target.vkey, alg=COSIGNATURE_V1_ALG), target.peer, target.url)

    @property
    def name(self) -> str:
        return self.vkey.name


class WitnessPusher:
    def __init__(
        self,
        witnesses: Sequence[PushWitness],
        client: PeerClient,
        store,
        audit: AuditLog,
        executor: concurrent.futures.Executor,
        metrics: Metrics,
        me: str,
        clock: Callable[[], int],
    ) -> None:
        self.witnesses = tuple(witnesses)
        self._client = client
        self._store = store
        self._audit = audit
        self._executor = executor
        self._metrics = metrics
        self._me = me
        self._clock = clock
        self._lock = asyncio.Lock()

    def cosigned_size(self, witness: PushWitness) -> int:
        """The largest size of ours this witness has cosigned (kept cosignatures)."""
        return self._store.cosigned_size(witness.name, witness.vkey.key_id)

    async def push(self, cp: SignedCheckpoint, *, wait: bool = False) -> None:
        """Ask every witness that has not cosigned ``cp`` yet, one push at a time (a
        push while one runs is dropped unless ``wait``: the next checkpoint comes)."""
        if not self.witnesses or (self._lock.locked() and not wait):
            return
        async with self._lock:
            todo = [w for w in self.witnesses if self.cosigned_size(w) != cp.tree_size]
            await asyncio.gather(*(self._push_one(w, cp) for w in todo))

    async def _push_one(self, witness: PushWitness, cp: SignedCheckpoint) -> None:
        old = self.cosigned_size(witness)
        try:
            for _ in range(MAX_ATTEMPTS):
                status, body, ctype = await self._request(witness, cp, old)
                if status == 409 and ctype == SIZE_CONTENT_TYPE:
                    old = parse_size_body(body)  # the witness says where it is: again
                    continue
                if status != 200:
                    raise ExchangeError(
                        "witness_refused",
                        f"HTTP {status}: {body[:200].decode(errors='replace')}",
                    )
                await self._keep(witness, cp, parse_cosignatures(body))
                return
            raise ExchangeError("witness_conflict", f"still 409 after {MAX_ATTEMPTS} attempts")
        except Exception as exc:
            self._metrics.witness_push_failed.labels(witness.name).inc()
            log.warning(
                "audit.witness_push_failed",
                witness=witness.name,
                size=cp.tree_size,
                error=getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}",
            )

    async def _request(self, witness: PushWitness, cp: SignedCheckpoint, old: int):
        size = cp.tree_size
        if old > size:
            raise ExchangeError(
                "witness_ahead",
                f"the witness holds size {old} of this log, larger than its latest {size}:"
                " it saw a checkpoint this node no longer has; run `exchange-node audit verify`",
            )
        proof: list[bytes] = []
        if 0 < old < size:
            proof = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._audit.consistency_hashes, old, size
            )
        body = encode_request(old, proof, cp.note)
        return await self._client.add_checkpoint(witness.peer, witness.url, body)

    async def _keep(self, witness: PushWitness, cp: SignedCheckpoint, lines: list[str]) -> None:
        cosigned = verify_cosignatures(cp.note + "".join(lines), [witness.vkey])
        if not cosigned:
            raise ValidationError(
                "cosignature_missing", "the answer has no cosignature by the configured key"
            )
        [c] = cosigned
        now = self._clock()
        row = CosignatureRow(
            cp.tree_size, witness.name, witness.vkey.key_id, c.timestamp, c.line, now
        )

        def work(tx) -> None:
            if tx.add_cosignature(row):
                tx.audit(
                    [
                        leaves.witness_cosigned(
                            now, self._me, witness.name, cp.tree_size, c.timestamp
                        )
                    ]
                )

        await self._store.transaction(work, label=LABEL)
        log.info("audit.witness_cosigned", witness=witness.name, size=cp.tree_size)
