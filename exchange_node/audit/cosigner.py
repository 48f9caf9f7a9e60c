"""This node as a C2SP tlog-witness: it cosigns its peers' checkpoints (and those of
logs its config names) with its witness key, after checking each extends the last one
it cosigned for that log.

The logs witnessed: every pinned peer's log under its current origin
``exchange-node.example/<node id>``, verified by the signing keys on the peer's pinned
card; and each ``[witness] logs`` verifier key of the config. The check of the request's
old size against the stored one, the stored state's update and the audit leaf are one
store transaction (``witness.cosign``), so two requests can never roll a log back.
Every refusal is audited (``checkpoint.refused``) in a transaction of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from exchange_node.audit import leaves
from exchange_node.audit.checkpoint import node_of_origin, origin_for
from exchange_node.audit.cosignature import VerifierKey, cosign, witness_vkey
from exchange_node.audit.tlog_witness import (
    Cosigned,
    LogState,
    WitnessRefusal,
    add_checkpoint,
    parse_request,
)
from exchange_node.protocol.keyring import Keyring
from exchange_node.store.records import WitnessLogRow

LABEL = "witness.cosign"


@dataclass(frozen=True)
class WitnessedLog:
    """A log this node witnesses: whose (``peer``, "" for a configured log) and the
    keys its checkpoints must be signed by."""

    peer: str
    keys: tuple[Ed25519PublicKey, ...]


class Cosigner:
    def __init__(
        self,
        store,
        name: str,
        key: Ed25519PrivateKey,
        keyring: Callable[[], Keyring],
        external_logs: Sequence[VerifierKey],
        clock: Callable[[], int],
    ) -> None:
        self._store = store
        self.name = name
        self._key = key
        self._keyring = keyring
        self._external = {v.name: v for v in external_logs}
        self._clock = clock
        self.vkey = witness_vkey(name, key.public_key())

    def log(self, origin: str) -> WitnessedLog | None:
        """The log ``origin`` names if this node witnesses it, else None."""
        configured = self._external.get(origin)
        if configured is not None:
            return WitnessedLog("", (configured.public_key,))
        node = node_of_origin(origin)
        if node is None or origin != origin_for(node):
            return None
        card = self._keyring().get(node)
        if card is None:
            return None
        return WitnessedLog(
            node, tuple(Ed25519PublicKey.from_public_bytes(k.public) for k in card.signing_keys)
        )

    def sign(self, body: bytes, now_ms: int) -> str:
        return cosign(body, self.name, self._key, max(1, now_ms // 1000))

    async def add_checkpoint(self, body: bytes, client: str | None) -> Cosigned:
        """Answer one ``add-checkpoint`` request from ``client`` (a pinned peer, None on
        plain HTTP). Returns what was cosigned, or raises :class:`WitnessRefusal`
        after auditing it."""
        now = self._clock()
        actor = client or "unknown"
        try:
            request = parse_request(body)
        except WitnessRefusal as refusal:
            await self._refused(now, actor, refusal)
            raise

        def keys(origin: str) -> tuple[Ed25519PublicKey, ...] | None:
            found = self.log(origin)
            return None if found is None else found.keys

        def work(tx) -> Cosigned | WitnessRefusal:
            def state(origin: str) -> LogState | None:
                row = tx.witness_log(origin)
                return None if row is None else LogState(row.tree_size, row.root)

            try:
                out = add_checkpoint(request, keys, state, lambda b: self.sign(b, now))
            except WitnessRefusal as refusal:
                tx.audit([_refusal_leaf(now, actor, self.log(refusal.origin), refusal)])
                return refusal
            cp = out.checkpoint
            log = self.log(cp.origin)
            assert log is not None
            tx.set_witness_log(
                WitnessLogRow(
                    cp.origin, log.peer, cp.tree_size, cp.root_hash, out.note + out.cosignature, now
                )
            )
            tx.audit(
                [
                    leaves.checkpoint_cosigned(
                        now, actor, log.peer, cp.origin, out.old_size, cp.tree_size, cp.root_hash
                    )
                ]
            )
            return out

        result = await self._store.transaction(work, label=LABEL)
        if isinstance(result, WitnessRefusal):
            raise result
        return result

    async def _refused(self, now: int, actor: str, refusal: WitnessRefusal) -> None:
        leaf = _refusal_leaf(now, actor, None, refusal)
        await self._store.append_audit([leaf])


def _refusal_leaf(now: int, actor: str, log: WitnessedLog | None, refusal: WitnessRefusal):
    attrs = {} if refusal.latest_size is None else {"latest_size": str(refusal.latest_size)}
    return leaves.checkpoint_refused(
        now, actor, log.peer if log else "", refusal.code, refusal.status, refusal.origin, attrs
    )
