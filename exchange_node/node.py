"""The composition root: config -> store -> keys -> services -> apps.

:class:`Node` is the only place that reads configuration, opens files and starts
servers. Everything it wires together (protocol core, store, audit log, delivery
workers, aiohttp apps) is built here and handed its dependencies explicitly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import structlog
from aiohttp import web

from exchange_node.api.local import create_local_app
from exchange_node.api.peer import PROTOBUF, create_peer_app
from exchange_node.at_rest import AtRest
from exchange_node.audit import leaves
from exchange_node.audit.checkpoint import parse_checkpoint
from exchange_node.audit.leaf import AuditEvent, LeafKind
from exchange_node.audit.log import AuditLog
from exchange_node.audit.migrate import adopt_audit_file
from exchange_node.config import Config, ConfigError, parse_listen
from exchange_node.delivery.outbox import (
    choose_recipients,
    keyring_from_store,
    payload_context,
    seal_for,
    store_revocations,
)
from exchange_node.delivery.receiver import (
    BatchRefused,
    EnvelopeResult,
    ReceiverContext,
    Validator,
    inbox_items,
    merge_store_outcomes,
    open_envelopes,
    parse_batch,
    sign_receipt,
    validate_envelopes,
)
from exchange_node.delivery.worker import Backoff, DeliveryError, PeerWorker
from exchange_node.errors import ExchangeError
from exchange_node.identity import NodeKeys, load_identity
from exchange_node.metrics import Metrics
from exchange_node.pb.exchange.v1 import envelope_pb2, notice_pb2
from exchange_node.protocol.cards import PeerCard, verify_card
from exchange_node.protocol.envelope import Freshness, OpenedEnvelope, seal
from exchange_node.protocol.errors import OpenError, wire_reason_name
from exchange_node.protocol.keyring import Keyring
from exchange_node.protocol.receipts import VerifiedReceipt, outcome_name, verify_receipt
from exchange_node.services import Services
from exchange_node.store.records import OutboxItem, OutboxRow
from exchange_node.store.sqlite import SqliteStore, SqliteTransaction
from exchange_node.tls import client_context, server_context, trust_peers

log = structlog.get_logger("exchange_node.node")


def key_passphrase(config: Config) -> bytes | None:
    """The private-key passphrase from the environment variable the config names, or
    None when keys are unencrypted. ConfigError if the variable is unset or empty."""
    env = config.node.key_passphrase_env
    if not env:
        return None
    value = os.environ.get(env)
    if not value:
        raise ConfigError(
            f"{config.path}: [node] key_passphrase_env: environment variable {env} is not set or empty"
        )
    return value.encode()


DATABASE = "node.sqlite"
"""The node's one database in its data directory: state, index, outbox and audit log."""


def prepare_database(data_dir: Path) -> Path:
    """The node's database, created (0600) and migrated, with an audit log kept in a file
    of its own by an earlier release adopted into it. Node.open and the offline commands
    both start here."""
    path = data_dir / DATABASE
    SqliteStore.prepare(path)
    adopt_audit_file(data_dir, path)
    return path


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Submitted:
    peer_id: str
    message_id: bytes
    outbox_id: int


class Node:
    """One running exchange node."""

    def __init__(
        self,
        config: Config,
        keys: NodeKeys,
        store: SqliteStore,
        audit: AuditLog,
        at_rest: AtRest,
        *,
        clock: Callable[[], int] = wall_clock_ms,
        passphrase: bytes | None = None,
    ) -> None:
        self.config = config
        self.keys = keys
        self.store = store
        self.audit = audit
        self.at_rest = at_rest
        self.clock = clock
        self.passphrase = passphrase
        self.node_id = keys.local.node_id
        self.keyring = Keyring()
        self.metrics = Metrics()
        self.freshness = Freshness(
            max_skew_ms=config.protocol.max_clock_skew_seconds * 1000,
            max_age_ms=config.protocol.retention_days * 86_400_000,
        )
        self.validators: list[Validator] = []
        # Run inside the receiving transaction (write what accepted envelopes index);
        # must only write through the transaction and may be run again after a rollback.
        self.apply_accepted: list[
            Callable[[SqliteTransaction, Sequence[EnvelopeResult], int], None]
        ] = []
        # Run after the receipt is committed (wake long-pollers, apply announcements).
        self.on_accepted: list[Callable[[Sequence[EnvelopeResult]], object]] = []
        self.inbound_slots = asyncio.Semaphore(config.peer_api.max_concurrent_batches)
        self.workers: dict[str, PeerWorker] = {}
        self.log = log.bind(node=self.node_id)
        # Checkpoint signing and peer witnessing: off the loop, one at a time. Leaves are
        # appended by the store's writer, in the transaction of the change they record.
        self._audit_executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="audit")
        store.attach_audit(audit.append_on)
        # Opening envelopes is mostly OpenSSL work that releases the GIL: a batch is
        # opened in slices on these threads, one per core.
        self._crypto_threads = max(1, min(4, os.cpu_count() or 1))
        self._crypto_pool = concurrent.futures.ThreadPoolExecutor(
            self._crypto_threads, thread_name_prefix="crypto"
        )
        self._checkpoint_note = b""
        self._tls_by_fp: dict[bytes, str] = {}
        self._paused: set[str] = set()
        self._policies: dict[str, tuple[str, ...]] = {}
        self._peer_state: tuple = ()
        self._card_mtime = 0
        self._client_ssl: dict[tuple[str, bytes], object] = {}
        self._server_ssl = None
        self._session: aiohttp.ClientSession | None = None
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task] = []  # long-running loops, cancelled at stop
        self._background: set[asyncio.Task] = set()  # one-off work, awaited at stop
        self.peer_port: int | None = None
        self.local_port: int | None = None
        self.ready = False
        # Document index, notices and cases: registers validators and on_accepted hooks.
        self.services = Services(self)

    # --- construction -----------------------------------------------------------------

    @classmethod
    async def open(cls, config: Config, *, clock: Callable[[], int] = wall_clock_ms) -> Node:
        """Open everything the config names. Raises ConfigError for a bad setup."""
        passphrase = key_passphrase(config)
        data = config.data_path
        keys = load_identity(data, passphrase)
        if keys.local.node_id != config.node.id:
            raise ConfigError(
                f"{config.path}: [node] id: expected {keys.local.node_id} (the id of the keys in {data}), got {config.node.id!r}"
            )
        database = prepare_database(data)
        store = await SqliteStore.open(database)
        audit = AuditLog(
            database,
            node_id=keys.local.node_id,
            signing_key=keys.local.signing_key.private,
        )
        at_rest = AtRest.load_or_create(data / "keys" / "storage.key")
        node = cls(config, keys, store, audit, at_rest, clock=clock, passphrase=passphrase)
        node.reload_peers()
        node._card_mtime = (data / "card.pb").stat().st_mtime_ns
        return node

    def now_ms(self) -> int:
        return self.clock()

    # --- peers --------------------------------------------------------------------------

    def reload_peers(self) -> None:
        """Rebuild the keyring, TLS trust and workers from the store's pinned peers."""
        ring, peers = keyring_from_store(self.store, self.keyring.revoked)
        self.keyring = ring
        self._paused = {p.node_id for p in peers if p.paused}
        self._policies = {p.node_id: tuple(p.policy) for p in peers if p.policy}
        self._tls_by_fp = {
            c.tls_cert_sha256: c.node_id for c in ring.peers.values() if c.tls_cert_sha256
        }
        if self._server_ssl is not None:
            trust_peers(self._server_ssl, [c.tls_certificate for c in ring.peers.values()])
        self._peer_state = tuple((p.node_id, p.updated_at, p.paused) for p in peers)
        if self.ready:
            self._sync_workers()

    def peer_by_tls_fingerprint(self, fp: bytes) -> str | None:
        return self._tls_by_fp.get(fp)

    def is_paused(self, peer_id: str) -> bool:
        return peer_id in self._paused

    def policy(self, peer_id: str) -> tuple[str, ...]:
        """Notice kinds allowed with ``peer_id``: the policy stored with the peer (set by
        ``peer add --allow`` or the API), else the config file's. Kept in memory and
        rebuilt with the peers, so the hot paths never query for it."""
        policy = self._policies.get(peer_id)
        return policy if policy is not None else self.config.policy_for(peer_id)

    async def set_policy(self, peer_id: str, kinds: Sequence[str]) -> None:
        """Store and apply at once which notice kinds may go to and come from a peer."""
        await self.store.set_policy(peer_id, kinds, self.now_ms())
        self.reload_peers()

    def _sync_workers(self) -> None:
        for peer_id in list(self.workers):
            if peer_id not in self.keyring.peers:
                worker = self.workers.pop(peer_id)
                self._spawn(worker.stop())
        for peer_id in self.keyring.peers:
            if peer_id not in self.workers:
                worker = PeerWorker(
                    self,
                    peer_id,
                    batch_size=self.config.delivery.batch_size,
                    backoff=Backoff(
                        self.config.delivery.backoff_initial_ms, self.config.delivery.backoff_max_ms
                    ),
                )
                self.workers[peer_id] = worker
                worker.start()
            else:
                self.workers[peer_id].wake()

    # --- sending ------------------------------------------------------------------------

    async def submit(
        self,
        body: notice_pb2.Body,
        recipients: Sequence[str] | None = None,
        *,
        actor: str = "operator",
        also: Callable[[SqliteTransaction], object] | None = None,
        then: Callable[[SqliteTransaction, list[Submitted]], object] | None = None,
        label: str = "notice.submit",
    ) -> list[Submitted]:
        """Seal ``body`` to each recipient (default: every peer whose policy allows its
        kind) and queue it, with its ``notice.submitted`` leaves and whatever ``also``
        writes (the caller's index or case rows), in one transaction. ``then`` runs
        last in that transaction with what was queued (the answer a caller keeps with
        it). Durable when it returns; delivery happens in the background.

        Raises ValueError naming an unknown peer, PermissionError naming one whose
        policy forbids the kind (nothing is queued or written then).
        """
        (submitted,) = await self.submit_many(
            [(body, recipients)],
            actor=actor,
            also=also,
            then=None if then is None else lambda tx, queued: then(tx, queued[0]),
            label=label,
        )
        return submitted

    async def submit_many(
        self,
        bodies: Sequence[tuple[notice_pb2.Body, Sequence[str] | None]],
        *,
        actor: str = "operator",
        also: Callable[[SqliteTransaction], object] | None = None,
        then: Callable[[SqliteTransaction, list[list[Submitted]]], object] | None = None,
        label: str = "notice.batch",
    ) -> list[list[Submitted]]:
        """:meth:`submit` for several (body, recipients) at once, all in ONE transaction:
        every body is queued with its leaves, or none is. Returns, per body, its copies.
        ``also`` and ``then`` run once for the whole transaction (``then`` gets the
        copies per body). The same errors as :meth:`submit`, before anything is written.
        """
        now = self.now_ms()
        sealed: list[list[OutboxItem]] = []
        events: list[AuditEvent] = []
        for body, recipients in bodies:
            kind = body.WhichOneof("content") or ""
            targets = choose_recipients(kind, recipients, self.keyring.peers, self.policy)
            items = seal_for(
                body.SerializeToString(),
                sender=self.keys.local,
                keyring=self.keyring,
                recipients=targets,
                at_rest=self.at_rest,
                now_ms=now,
            )
            sealed.append(items)
            events += [
                leaves.notice_submitted(now, actor, i.peer_id, i.message_id, kind) for i in items
            ]
        flat = [i for items in sealed for i in items]

        def work(tx: SqliteTransaction) -> list[list[Submitted]]:
            if also is not None:
                also(tx)
            ids = iter(tx.enqueue(flat))
            tx.audit(events)
            queued = [[Submitted(i.peer_id, i.message_id, next(ids)) for i in items]
                      for items in sealed]  # fmt: skip
            if then is not None:
                then(tx, queued)
            return queued

        queued = await self.store.transaction(work, label=label, weight=2 * len(flat) + len(sealed))
        for peer_id in {i.peer_id for i in flat}:
            worker = self.workers.get(peer_id)
            if worker is not None:
                worker.wake()
        return queued

    async def record_audit(self, *events: AuditEvent) -> range:
        """Append leaves that record no other change (lookups, refusals); durable on return."""
        return await self.store.append_audit(events)

    async def post_batch(self, peer_id: str, data: bytes) -> bytes:
        card = self.keyring.require(peer_id)
        url = card.endpoint.rstrip("/") + "/exchange/v1/batch"
        started = time.perf_counter()
        try:
            async with self._http().post(
                url, data=data, headers={"Content-Type": PROTOBUF}, ssl=self._ssl_for(card)
            ) as resp:
                body = await resp.read()
                if resp.status == 200:
                    self.metrics.send_latency.labels(peer_id).observe(time.perf_counter() - started)
                    return body
                retry = resp.headers.get("Retry-After")
                raise DeliveryError(
                    f"HTTP {resp.status}: {body[:200].decode(errors='replace')}",
                    float(retry) if retry and retry.isdigit() else None,
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from None

    def _ssl_for(self, card: PeerCard):
        if card.endpoint.startswith("http://"):
            if not self.config.peer_api.allow_plain_http:
                raise DeliveryError(
                    f"{card.node_id} has a plain http endpoint and allow_plain_http is false"
                )
            return None
        key = (card.node_id, card.tls_cert_sha256)
        ctx = self._client_ssl.get(key)
        if ctx is None:
            ctx = client_context(
                self.keys.tls_cert_der,
                self.keys.tls_key_path,
                card.tls_certificate,
                self.passphrase,
            )
            self._client_ssl[key] = ctx
        return ctx

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.delivery.request_timeout_seconds),
                connector=aiohttp.TCPConnector(limit=64),
            )
        return self._session

    def verify_receipt_for(
        self, peer_id: str, signed: bytes, batch_id: bytes, hashes: Sequence[bytes]
    ) -> VerifiedReceipt:
        """Verify a peer's receipt for our batch; a refused receipt is audited (the batch
        stays queued and is sent again)."""
        try:
            return verify_receipt(
                signed,
                keyring=self.keyring,
                receiver=peer_id,
                sender=self.node_id,
                batch_id=batch_id,
                envelope_hashes=hashes,
            )
        except OpenError as exc:
            self._spawn(
                self.record_audit(
                    leaves.receipt_refused(
                        self.now_ms(), peer_id, batch_id, signed, exc.reason.value
                    )
                )
            )
            raise

    async def fetch_card(self, peer_id: str) -> bytes:
        card = self.keyring.require(peer_id)
        url = card.endpoint.rstrip("/") + "/exchange/v1/card"
        try:
            async with self._http().get(url, ssl=self._ssl_for(card)) as resp:
                if resp.status != 200:
                    raise DeliveryError(f"card fetch: HTTP {resp.status}")
                return await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DeliveryError(f"card fetch: {type(exc).__name__}: {exc}") from None

    async def refresh_card(self, peer_id: str) -> bool:
        """Fetch the peer's current card; adopt it if it is a rotation signed by a key we
        trust. True if the pinned card changed."""
        try:
            fresh = await self.fetch_card(peer_id)
            if verify_card(fresh).serial > self.keyring.require(peer_id).serial:
                await self.accept_rotation(fresh, actor=peer_id)
                return True
        except (DeliveryError, OpenError) as exc:
            self.log.warning(
                "peer.card_refresh_failed", peer=peer_id, error=str(getattr(exc, "detail", exc))
            )
        return False

    async def reseal(self, peer_id: str, rows: Sequence[OutboxRow]) -> None:
        """The peer refused our seal (it rotated its key, or we did): refresh its card
        when it has a newer one, then seal the same bodies again under the same ids."""
        await self.refresh_card(peer_id)
        card = self.keyring.require(peer_id)
        now = self.now_ms()
        for row in rows:
            if row.payload is None:
                continue
            body = self.at_rest.decrypt(row.payload, payload_context(peer_id, row.message_id))
            sealed = seal(
                body, sender=self.keys.local, recipient=card, now_ms=now, message_id=row.message_id
            )
            await self.store.replace_envelope(row.id, sealed.data)
        self.log.info("outbox.resealed", peer=peer_id, count=len(rows))

    def settlement_events(
        self,
        peer_id: str,
        batch_id: bytes,
        rows: Sequence[OutboxRow],
        receipt: VerifiedReceipt,
        now: int,
    ) -> list[AuditEvent]:
        """The leaves settling ``receipt`` (committed with the outcomes it applies)."""
        settled = [
            (
                row.message_id,
                outcome_name(o.outcome),
                wire_reason_name(o.reason) if o.reason else "",
            )
            for row, o in zip(rows, receipt.outcomes, strict=True)
        ]
        return leaves.settlement(now, self.node_id, peer_id, batch_id, receipt.signed, settled)

    async def after_receipt(
        self, peer_id: str, batch_id: bytes, rows: Sequence[OutboxRow], receipt: VerifiedReceipt
    ) -> None:
        """Count a settled receipt and witness the checkpoint it carries."""
        counts = Counter(
            (outcome_name(o.outcome), wire_reason_name(o.reason) if o.reason else "")
            for o in receipt.outcomes
        )
        for (outcome, reason), n in counts.items():
            self.metrics.sent.labels(peer_id, outcome, reason).inc(n)
        self.metrics.batch_size.labels(peer_id).observe(len(rows))
        if receipt.checkpoint:
            await self._witness(peer_id, receipt)

    async def _witness(self, peer_id: str, receipt: VerifiedReceipt) -> None:
        """Check the receiver's audit checkpoint against the last one we hold from it."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        card = self.keyring.require(peer_id)
        entry = card.signing_key(receipt.receipt.signer_key_id)
        if entry is None:
            return
        loop = asyncio.get_running_loop()
        # Fetch the consistency proof here, on the loop, before handing the check to the
        # audit thread: a slow peer must never hold the thread every audit append needs.
        note = receipt.checkpoint.decode()
        try:
            new_size = parse_checkpoint(note)[0].tree_size
            held = await loop.run_in_executor(
                self._audit_executor, self.audit.peer_checkpoint, peer_id
            )
        except Exception as exc:
            self.log.warning("audit.peer_checkpoint_unchecked", peer=peer_id, error=str(exc))
            return
        proofs: dict[tuple[int, int], list[bytes] | ExchangeError] = {}
        if held is not None and held.tree_size != new_size and min(held.tree_size, new_size) > 0:
            sizes = (min(held.tree_size, new_size), max(held.tree_size, new_size))
            try:
                proofs[sizes] = await self._fetch_consistency(peer_id, *sizes)
            except ExchangeError as exc:  # the peer cannot prove it: recorded as such
                proofs[sizes] = exc
            except (DeliveryError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                self.log.warning("audit.peer_checkpoint_unchecked", peer=peer_id, error=str(exc))
                return

        def fetch_proof(first: int, second: int) -> list[bytes]:
            answer = proofs.get((first, second))
            if answer is None:
                raise DeliveryError(f"no consistency proof fetched for {first}->{second}")
            if isinstance(answer, ExchangeError):
                raise answer
            return answer

        try:
            result = await loop.run_in_executor(
                self._audit_executor,
                lambda: self.audit.record_peer_checkpoint(
                    peer_id,
                    note,
                    Ed25519PublicKey.from_public_bytes(entry.public),
                    fetch_proof,
                    now=self.now_ms(),
                ),
            )
        except Exception as exc:
            self.log.warning("audit.peer_checkpoint_unchecked", peer=peer_id, error=str(exc))
            return
        if not result.consistent:
            self.metrics.checkpoint_alarm.labels(peer_id).inc()
            self.log.error(
                "audit.peer_checkpoint_inconsistent",
                peer=peer_id,
                reason=result.reason,
                old_size=result.old_size,
                new_size=result.new_size,
            )

    async def _fetch_consistency(self, peer_id: str, first: int, second: int) -> list[bytes]:
        card = self.keyring.require(peer_id)
        url = card.endpoint.rstrip("/") + "/exchange/v1/audit/consistency"
        async with self._http().get(
            url, params={"first": str(first), "second": str(second)}, ssl=self._ssl_for(card)
        ) as resp:
            if 400 <= resp.status < 500:
                # The peer cannot prove its own earlier checkpoint: for a witness that
                # is "not proved", i.e. inconsistent, not a transport hiccup.
                raise ExchangeError(
                    "peer_proof_unavailable",
                    f"{peer_id} could not prove consistency {first}->{second} (HTTP {resp.status})",
                )
            if resp.status != 200:
                raise DeliveryError(f"consistency proof: HTTP {resp.status}")
            data = await resp.json()
        return [bytes.fromhex(h) for h in data["proof"]]

    def observe_failure(self, peer_id: str, detail: str) -> None:
        self.metrics.delivery_errors.labels(peer_id).inc()

    # --- receiving ----------------------------------------------------------------------

    async def receive_batch(self, data: bytes, peer: str | None) -> bytes:
        """Process one batch from ``peer`` (None on plain HTTP); return the signed receipt.

        Raises BatchRefused for a batch refused as a whole.
        """
        now = self.now_ms()
        batch = parse_batch(data, peer)
        if batch.sender not in self.keyring.peers:
            raise BatchRefused(
                403,
                "unknown_peer",
                "the batch sender is not a pinned peer",
                claimed_sender=_identifier(batch.sender),
            )
        ctx = ReceiverContext(
            self.keys.local, self.keyring, self.freshness, self.policy, self.validators
        )
        results = validate_envelopes(ctx, batch.sender, await self._open_all(ctx, batch, now))
        items = inbox_items(results, now)
        checkpoint = self._checkpoint_note

        def work(tx: SqliteTransaction) -> tuple[list[EnvelopeResult], bytes]:
            # The inbox rows, what they index, the receipt and every leaf: one commit,
            # so ACCEPTED in the receipt means stored, indexed and audited.
            merged = merge_store_outcomes(results, tx.accept(items) if items else [])
            accepted = [r for r in merged if r.outcome == envelope_pb2.OUTCOME_ACCEPTED]
            for apply in self.apply_accepted:
                apply(tx, accepted, now)
            receipt = sign_receipt(
                me=self.keys.local,
                signing_key=self.keys.local.signing_key,
                batch=batch,
                results=merged,
                now_ms=now,
                checkpoint=checkpoint,
            )
            tx.store_sent_receipt(batch.sender, batch.batch_id, receipt, now)
            tx.audit(self._receive_events(batch, merged, receipt, now))
            return merged, receipt

        results, receipt = await self.store.transaction(
            work, label="batch.receive", weight=3 * len(results) + 2
        )
        accepted = [r for r in results if r.outcome == envelope_pb2.OUTCOME_ACCEPTED]
        for r in accepted:
            await self._apply_protocol_body(batch.sender, r.opened)
        for hook in self.on_accepted:
            res = hook(accepted)
            if asyncio.iscoroutine(res):
                await res
        counts = Counter(
            (
                outcome_name(r.outcome),
                r.reason.value if r.reason else "",
            )
            for r in results
        )
        for (outcome, reason), n in counts.items():
            self.metrics.received.labels(batch.sender, outcome, reason).inc(n)
        worker = self.workers.get(batch.sender)
        if worker is not None:
            worker.wake(reset_backoff=True)  # the peer is evidently up
        return receipt

    async def _open_all(
        self, ctx: ReceiverContext, batch: envelope_pb2.Batch, now: int
    ) -> list[EnvelopeResult]:
        """Open a batch's envelopes, on the crypto threads when it is worth it."""
        envs = batch.envelopes
        if len(envs) < 2 * _CRYPTO_CHUNK_MIN:
            return open_envelopes(ctx, batch.sender, envs, 0, now)
        n = min(self._crypto_threads, len(envs) // _CRYPTO_CHUNK_MIN)
        size = -(-len(envs) // n)
        loop = asyncio.get_running_loop()
        parts = await asyncio.gather(
            *(
                loop.run_in_executor(
                    self._crypto_pool, open_envelopes, ctx, batch.sender, envs[i : i + size], i, now
                )
                for i in range(0, len(envs), size)
            )
        )
        return [r for part in parts for r in part]

    def _receive_events(
        self, batch, results: Sequence[EnvelopeResult], receipt: bytes, now: int
    ) -> list[AuditEvent]:
        events = [
            leaves.envelope_received(
                now,
                batch.sender,
                r.message_id,
                r.envelope_hash,
                outcome_name(r.outcome),
                r.reason.value if r.reason else "",
                r.kind,
            )
            for r in results
        ]
        events.append(leaves.receipt_sent(now, self.node_id, batch.sender, batch.batch_id, receipt))
        return events

    def audit_rejection(self, peer: str, code: str, attrs: dict[str, str] | None = None) -> None:
        """Audit a batch refused as a whole (oversized, malformed, unknown peer)."""
        self._spawn(self.record_audit(leaves.batch_refused(self.now_ms(), peer, code, attrs)))

    async def _apply_protocol_body(self, sender: str, opened: OpenedEnvelope | None) -> None:
        if opened is None:
            return
        kind = opened.body.WhichOneof("content")
        if kind == "card_announcement":
            signed = opened.body.card_announcement.signed_card.SerializeToString()
            try:
                await self.accept_rotation(signed, actor=sender)
            except OpenError as exc:
                self.log.warning(
                    "peer.rotation_refused", peer=sender, reason=exc.reason.value, detail=exc.detail
                )
        elif kind == "revocation_announcement":
            signed = opened.body.revocation_announcement.signed_revocation.SerializeToString()
            try:
                await self.accept_revocation(signed, actor=sender)
            except OpenError as exc:
                self.log.warning(
                    "peer.revocation_refused",
                    peer=sender,
                    reason=exc.reason.value,
                    detail=exc.detail,
                )

    async def accept_rotation(self, signed_card: bytes, *, actor: str) -> PeerCard:
        """Apply a peer's new card if a key we trust signed it; OpenError otherwise."""
        card = self.keyring.rotate(signed_card)
        record = self.store.get_peer(card.node_id)
        await self.store.upsert_peer(card.node_id, card.signed, card.fingerprint, self.now_ms())
        self._tls_by_fp[card.tls_cert_sha256] = card.node_id
        if self._server_ssl is not None and card.tls_certificate:
            trust_peers(self._server_ssl, [card.tls_certificate])
        self._peer_state = ()  # force a reload on the next watch tick
        await self.record_audit(
            AuditEvent(
                time=self.now_ms(),
                kind=LeafKind.KEY_ROTATED,
                actor=actor,
                peer=card.node_id,
                attrs={
                    "serial": str(card.serial),
                    "signing_key": card.current_signing_key.key_id.hex(),
                },
            )
        )
        self.log.info("peer.rotated", peer=card.node_id, serial=card.serial, previous=bool(record))
        return card

    async def accept_revocation(self, signed: bytes, *, actor: str) -> None:
        rev = self.keyring.revoke(signed)
        await store_revocations(self.store, self.keyring)
        await self.record_audit(
            AuditEvent(
                time=self.now_ms(),
                kind=LeafKind.KEY_REVOKED,
                actor=actor,
                peer=rev.node_id,
                attrs={"key_id": rev.key_id.hex(), "revoked_at": str(rev.revoked_at_ms)},
            )
        )
        self.log.warning("peer.key_revoked", peer=rev.node_id, key_id=rev.key_id.hex())

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the peer API, the local API and one worker per pinned peer."""
        cfg = self.config
        if cfg.peer_api.allow_plain_http:
            self.log.warning(
                "transport.plain_http",
                message="PLAIN HTTP ENABLED: peer traffic is not protected by TLS; use only for demos and tests",
            )
            self._server_ssl = None
        else:
            self._server_ssl = server_context(
                self.keys.tls_cert_der,
                self.keys.tls_key_path,
                [c.tls_certificate for c in self.keyring.peers.values()],
                self.passphrase,
            )
        host, port = parse_listen(cfg.peer_api.listen)
        self.peer_port = await self._serve(create_peer_app(self), host, port, self._server_ssl)
        host, port = parse_listen(cfg.local_api.listen)
        self.local_port = await self._serve(create_local_app(self), host, port, None)
        await self.record_audit(
            AuditEvent(
                time=self.now_ms(),
                kind=LeafKind.CONFIG_LOADED,
                actor="operator",
                attrs={
                    "config_sha256": hashlib.sha256(Path(cfg.path).read_bytes()).hexdigest()
                    if cfg.path
                    else "",
                    "plain_http": str(cfg.peer_api.allow_plain_http).lower(),
                },
            )
        )
        await self.sign_checkpoint()
        self.ready = True
        self._sync_workers()
        self._tasks.append(asyncio.create_task(self._watch(), name="watch"))
        self._tasks.append(asyncio.create_task(self._checkpoints(), name="checkpoints"))
        self.log.info(
            "node.started",
            peer_port=self.peer_port,
            local_port=self.local_port,
            peers=len(self.keyring.peers),
        )

    async def _serve(self, app: web.Application, host: str, port: int, ssl_context) -> int:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=512)
        await site.start()
        self._runners.append(runner)
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def sign_checkpoint(self) -> None:
        cp = await asyncio.get_running_loop().run_in_executor(
            self._audit_executor, self.audit.sign_checkpoint, self.now_ms()
        )
        # Receipts carry this note; kept here so answering a batch never waits on the
        # audit database's lock.
        self._checkpoint_note = cp.note.encode()
        self.metrics.audit_size.set(cp.tree_size)

    async def _checkpoints(self) -> None:
        while True:
            await asyncio.sleep(self.config.audit.checkpoint_interval_seconds)
            try:
                await self.sign_checkpoint()
            except Exception as exc:
                self.log.error("audit.checkpoint_failed", error=str(exc))

    async def _watch(self) -> None:
        """Pick up changes other processes (the CLI) made: peers, pauses, our own card;
        refresh queue gauges; purge past the retention window once an hour."""
        last_purge = 0.0
        while True:
            await asyncio.sleep(0.5)
            try:
                peers = self.store.list_peers()
                state = tuple((p.node_id, p.updated_at, p.paused) for p in peers)
                if state != self._peer_state:
                    self.reload_peers()
                mtime = (self.config.data_path / "card.pb").stat().st_mtime_ns
                if mtime != self._card_mtime:
                    self._card_mtime = mtime
                    self.keys = load_identity(self.config.data_path, self.passphrase)
                    self.audit.set_signing_key(self.keys.local.signing_key.private)
                    self.log.info("identity.reloaded", serial=self.keys.card.serial)
                self.update_gauges()
                if time.monotonic() - last_purge > 3600:
                    last_purge = time.monotonic()
                    await self.store.purge_before(self.now_ms() - self.freshness.max_age_ms)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.error("node.watch_failed", error=str(exc))

    def update_gauges(self) -> None:
        now = self.now_ms()
        for q in self.store.queue_stats():
            self.metrics.queue_depth.labels(q.peer_id).set(q.depth)
            self.metrics.dead.labels(q.peer_id).set(q.dead)
            age = (now - q.oldest_queued_at) / 1000 if q.oldest_queued_at else 0
            self.metrics.oldest_age.labels(q.peer_id).set(age)

    def _spawn(self, coro) -> None:
        """Run one-off work (an audit leaf, a worker stop) in the background; it is
        finished, not cancelled, when the node stops."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("node.background_failed", error=repr(task.exception()))

    async def stop(self) -> None:
        self.ready = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await asyncio.gather(*(w.stop() for w in self.workers.values()), return_exceptions=True)
        self.workers.clear()
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        if self._session is not None:
            await self._session.close()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.store.close()
        self._audit_executor.shutdown(wait=True)
        self._crypto_pool.shutdown(wait=True)
        self.audit.close()
        self.log.info("node.stopped")


_CRYPTO_CHUNK_MIN = 16  # envelopes; smaller batches are opened inline


def _identifier(text: str) -> str:
    """``text`` if it is safe to put in an audit leaf as an identifier, else a hash."""
    if re.fullmatch(r"[A-Za-z0-9._:@/+=-]{1,64}", text):
        return text
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:32]
