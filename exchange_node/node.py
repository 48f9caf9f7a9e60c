"""The composition root: config -> store -> keys -> parts -> apps.

:class:`Node` is the only place that reads configuration, opens files and starts
servers. It builds the parts and hands each the narrow dependencies it uses:

- :class:`~exchange_node.peers.PeerDirectory`: pinned peers, keys, policies;
- :class:`~exchange_node.delivery.client.PeerClient`: this node's side of the peer API;
- :class:`~exchange_node.delivery.sender.Outbox`: submitting, the per-peer workers and
  receipt settlement;
- :class:`~exchange_node.delivery.inbound.Inbound`: peers' batches in, receipts out;
- :class:`~exchange_node.audit.witness.Witness`: peers' checkpoints checked;
- the services (document index, notices, cases) and the two aiohttp apps.

What it keeps itself is the lifecycle: starting and stopping, the periodic checkpoint,
the watch for changes other processes make (peers, this node's own card), retention.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import fcntl
import hashlib
import math
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import structlog
from aiohttp import web

from exchange_node.api.auth import forget_tokens
from exchange_node.api.local import create_local_app
from exchange_node.api.peer import serve_peer_api
from exchange_node.api.peer_server import PeerSite, RefusalAudit
from exchange_node.at_rest import AtRest
from exchange_node.audit import leaves
from exchange_node.audit.checkpoint import ED25519_ALG, SignedCheckpoint
from exchange_node.audit.cosignature import parse_vkey
from exchange_node.audit.cosigner import Cosigner
from exchange_node.audit.leaf import AuditEvent, LeafKind
from exchange_node.audit.log import AuditLog
from exchange_node.audit.migrate import adopt_audit_file
from exchange_node.audit.witness import Witness
from exchange_node.config import Config, ConfigError, parse_listen
from exchange_node.delivery.client import PeerClient
from exchange_node.delivery.inbound import Inbound
from exchange_node.delivery.pacing import LiveFirst
from exchange_node.delivery.sender import Outbox, Submitted
from exchange_node.delivery.witnesses import PushWitness, WitnessPusher
from exchange_node.errors import ExchangeError
from exchange_node.expiry import Expiry, all_expiries, due, local_api_cert
from exchange_node.health import WriteHealth
from exchange_node.identity import (
    Identity,
    NodeKeys,
    load_identity,
    load_or_create_witness_key,
    unencrypted_key_files,
    witness_name,
)
from exchange_node.metrics import Metrics
from exchange_node.peers import PeerDirectory
from exchange_node.protocol.envelope import Freshness
from exchange_node.services import Services
from exchange_node.store.sqlite import SqliteStore
from exchange_node.tls import local_api_server_context, server_context

__all__ = [
    "DATABASE",
    "Node",
    "StartError",
    "Submitted",
    "key_passphrase",
    "lock_data_dir",
    "prepare_database",
]

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


class StartError(ExchangeError):
    """The node cannot start as configured: an address is taken, the data directory is in
    use by another node process. One line for the operator, a stable code for scripts."""

    status = 503


LOCK_FILE = "serve.lock"
"""In the data directory: held (flock) by the one ``serve`` process running on it."""


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Take the data directory for this process, or raise ``StartError(data_dir_locked)``
    naming the process that holds it. The lock is the kernel's (flock), tied to the open
    file: it goes with the process however it ends (even SIGKILL), so a stale file never
    blocks a restart. Keep the returned file open for as long as the node runs."""
    if not data_dir.is_dir():
        raise StartError(
            "data_dir_missing",
            f"{data_dir}: no such folder; run `exchange-node init` first",
            "node.data_dir",
        )
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    handle = os.fdopen(fd, "r+")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise StartError(
            "data_dir_locked",
            f"{data_dir} is in use by another exchange-node serve (pid {holder});"
            " stop it first, or give this one a config with its own data_dir",
            "node.data_dir",
        ) from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


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


@contextlib.contextmanager
def _binding(section: str, listen: str):
    """An address that cannot be bound is one line naming the setting, not a traceback."""
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise StartError(
                "listen_address_in_use",
                f"[{section}] listen {listen}: the address is already in use (another"
                " exchange-node or program listens there; `ss -ltnp` names it); stop it or"
                " choose another port",
                f"{section}.listen",
            ) from None
        raise StartError(
            "listen_failed",
            f"[{section}] listen {listen}: cannot listen there: {exc.strerror or exc}",
            f"{section}.listen",
        ) from None


async def open_store(config: Config) -> SqliteStore:
    """The store the config names: the PostgreSQL database at ``[store] url``, or
    ``node.sqlite`` in the data directory (prepared as :func:`prepare_database` does)."""
    if config.store.url:
        from exchange_node.store.postgresql import PostgresStore

        return await PostgresStore.open(config.store.url, password=config.store_password)
    return await SqliteStore.open(prepare_database(config.data_path))


def open_audit_log(config: Config, store: SqliteStore | None, signing_key=None) -> AuditLog:
    """The node's audit log, in the store's database: through ``store``'s connection
    for a server, or the database file. ``store`` None: offline tools (the database
    is prepared first)."""
    if config.store.url:
        from exchange_node.store.postgresql import connect

        connection = (
            store.audit_connection()
            if store is not None
            else connect(config.store.url, config.store_password)
        )
        return AuditLog(
            redact_url(config.store.url),
            node_id=config.node.id,
            signing_key=signing_key,
            connection=connection,
        )
    path = store.path if store is not None else prepare_database(config.data_path)
    return AuditLog(path, node_id=config.node.id, signing_key=signing_key)


def redact_url(url: str) -> str:
    from exchange_node.store.postgresql import redact

    return redact(url)


def _nothing() -> None:
    pass


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Node:
    """One running exchange node: its parts, wired, and their lifecycle."""

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
        self.identity = Identity(keys, passphrase)
        self.store = store
        self.audit = audit
        self.at_rest = at_rest
        self.clock = clock
        self.node_id = keys.local.node_id
        self.metrics = Metrics()
        self.freshness = Freshness(
            max_skew_ms=config.protocol.max_clock_skew_seconds * 1000,
            max_age_ms=config.protocol.retention_days * 86_400_000,
        )
        self.log = log.bind(node=self.node_id)
        # Checkpoint signing and peer witnessing: off the loop, one at a time. Leaves are
        # appended by the store's writer, in the transaction of the change they record.
        self._audit_executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="audit")
        store.attach_audit(audit.append_on)
        # Whether the database still takes writes (state and leaves alike) and the audit
        # log's own transactions (checkpoints) still commit: /readyz and the gauges.
        self.health = WriteHealth(store, audit, self._audit_executor, self.now_ms)
        self.health.export(self.metrics)
        self._checkpoint_note = b""
        self._latest_checkpoint: SignedCheckpoint | None = None
        self._card_mtime = 0
        self._server_ssl = None
        self._peer_site: PeerSite | None = None
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task] = []  # long-running loops, cancelled at stop
        self._stop_listening: Callable[[], None] = _nothing
        self._background: set[asyncio.Task] = set()  # one-off work, awaited at stop
        self.peer_port: int | None = None
        self.local_port: int | None = None
        self.ready = False

        # Refusals anyone who can connect can provoke (a TLS handshake, a malformed
        # request): audited within a budget per minute, the rest counted in one entry.
        self.handshake_refusals = self._refusal_audit(LeafKind.AUTH_FAILED, "peer_api.handshake")
        self.request_refusals = self._refusal_audit(LeafKind.REQUEST_REFUSED, "peer_api")

        self.directory = PeerDirectory(store, config, self.now_ms)
        self.client = PeerClient(self.directory, self.identity, config, self.metrics, self.now_ms)
        self.witness = Witness(
            audit,
            lambda: self.directory.keyring,
            self.client.fetch_consistency,
            self._audit_executor,
            self.metrics,
            self.now_ms,
        )
        # C2SP tlog-witness, both ways: cosigning peers' logs, pushing ours to witnesses.
        self.cosigner = Cosigner(
            store,
            witness_name(self.node_id),
            load_or_create_witness_key(config.data_path, passphrase),
            lambda: self.directory.keyring,
            [parse_vkey(v, alg=ED25519_ALG) for v in config.witness.logs],
            self.now_ms,
        )
        self.witnesses = WitnessPusher(
            [PushWitness.from_config(t) for t in config.witness.push],
            self.client,
            store,
            audit,
            self._audit_executor,
            self.metrics,
            self.node_id,
            self.now_ms,
        )
        # Catch-up steps, at either end, wait for live work under way in the node: the
        # outbox's, and live batches being received (delivery/pacing.py).
        self.live_first = LiveFirst(
            lambda: self.outbox.live_busy() or self.inbound.live_batches > 0,
            config.delivery.catchup_live_wait_ms,
            self.metrics.catchup_live_wait.inc,
        )
        self.outbox = Outbox(
            identity=self.identity,
            directory=self.directory,
            client=self.client,
            store=store,
            at_rest=at_rest,
            config=config,
            metrics=self.metrics,
            clock=self.now_ms,
            witness=self.witness.check,
            spawn=self._spawn,
            live_first=self.live_first,
        )
        self.inbound = Inbound(
            identity=self.identity,
            directory=self.directory,
            store=store,
            freshness=self.freshness,
            metrics=self.metrics,
            clock=self.now_ms,
            checkpoint=lambda: self._checkpoint_note,
            peer_seen=lambda peer: self.outbox.wake(peer, reset_backoff=True),
            spawn=self._spawn,
            max_concurrent=config.peer_api.max_concurrent_batches,
            max_per_peer=config.peer_api.max_concurrent_batches_per_peer,
            live_first=self.live_first,
        )
        self.directory.listeners += [self._trust_peers, self.outbox.sync_workers]
        # Entry points of the parts, as the API, the command line and the tests call them.
        self.submit = self.outbox.submit
        self.submit_many = self.outbox.submit_many
        self.receive_batch = self.inbound.receive
        # Document index, notices and cases: registers content handlers and hooks.
        self.services = Services(self)
        # Catch-up of peers that join or whose policy grows (services/catchup.py).
        self.directory.listeners.append(self.services.catchup.peers_changed)
        self.outbox.on_settled.append(self.services.catchup.wake)

    # --- construction -----------------------------------------------------------------

    @classmethod
    async def open(cls, config: Config, *, clock: Callable[[], int] = wall_clock_ms) -> Node:
        """Open everything the config names. Raises ConfigError for a bad setup."""
        passphrase = key_passphrase(config)
        data = config.data_path
        if passphrase is not None and (clear := unencrypted_key_files(data)):
            raise ConfigError(
                f"{config.path}: [node] key_passphrase_env: set, but {len(clear)} private"
                f" key file(s) in {data / 'keys'} are not encrypted (e.g. {clear[0].name});"
                " run `exchange-node keys encrypt` with the node stopped"
            )
        keys = load_identity(data, passphrase)
        if keys.local.node_id != config.node.id:
            raise ConfigError(
                f"{config.path}: [node] id: expected {keys.local.node_id} (the id of the keys in {data}), got {config.node.id!r}"
            )
        if keys.card.country != config.node.country:
            raise ConfigError(
                f"{config.path}: [node] country: expected {keys.card.country!r} (the country"
                f" on this node's card in {data}), got {config.node.country!r}"
            )
        store = await open_store(config)
        try:
            audit = open_audit_log(config, store, keys.local.signing_key.private)
        except BaseException:
            await store.close()
            raise
        at_rest = AtRest.load_or_create(data / "keys" / "storage.key")
        node = cls(config, keys, store, audit, at_rest, clock=clock, passphrase=passphrase)
        node.directory.reload()
        # Per-record data keys (store migration 7): the first key-encryption key on a new
        # or upgraded node, then cases kept under the storage key converted to their own.
        await node.services.protection.ensure_kek()
        await node.services.cases.adopt_record_keys(at_rest)
        node._card_mtime = (data / "card.pb").stat().st_mtime_ns
        return node

    def now_ms(self) -> int:
        return self.clock()

    @property
    def keys(self) -> NodeKeys:
        return self.identity.keys

    @property
    def keyring(self):
        return self.directory.keyring

    def policy(self, peer_id: str) -> tuple[str, ...]:
        return self.directory.policy(peer_id)

    def reload_peers(self) -> None:
        self.directory.reload()

    async def record_audit(self, *events: AuditEvent) -> range:
        """Append leaves that record no other change (lookups, refusals); durable on return."""
        return await self.store.append_audit(events)

    def _refusal_audit(self, kind: LeafKind, operation: str) -> RefusalAudit:
        suppressed = self.metrics.refusal_audit_suppressed.labels(operation)
        return RefusalAudit(
            kind=kind,
            operation=operation,
            write=lambda leaf: self._spawn(self.store.append_audit([leaf])),
            clock=self.now_ms,
            on_suppressed=suppressed.inc,
        )

    def _trust_peers(self, _changed: frozenset[str]) -> None:
        """Handshakes from now on trust exactly the pinned peers' certificates: a new
        context, as OpenSSL cannot drop a trust anchor from a live one. A removed peer's
        connections already open are refused by fingerprint (403)."""
        if self._server_ssl is None or self._peer_site is None:
            return
        try:
            ctx = server_context(
                self.identity.keys.tls_cert_der,
                self.identity.keys.tls_key_path,
                self.directory.tls_certificates(),
                self.identity.passphrase,
            )
        except (OSError, ValueError, ssl.SSLError) as exc:
            # Keep the context in use (and the other listeners running); requests from
            # a removed peer are still refused by fingerprint.
            self.log.error("transport.tls_context_failed", error=f"{type(exc).__name__}: {exc}")
            return
        self._server_ssl = ctx
        self._peer_site.set_ssl_context(ctx)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the peer API, the local API and one worker per pinned peer."""
        cfg = self.config
        keys = self.identity.keys
        if cfg.peer_api.allow_plain_http:
            self.log.warning(
                "transport.plain_http",
                message="PLAIN HTTP ENABLED: peer traffic is not protected by TLS; use only for demos and tests",
            )
            self._server_ssl = None
        else:
            self._server_ssl = server_context(
                keys.tls_cert_der,
                keys.tls_key_path,
                self.directory.tls_certificates(),
                self.identity.passphrase,
            )
        local_ssl = self._local_api_tls()
        host, port = parse_listen(cfg.peer_api.listen)
        with _binding("peer_api", cfg.peer_api.listen):
            runner, self._peer_site = await serve_peer_api(self, host, port, self._server_ssl)
        self.peer_port = self._peer_site.bound_port
        self._runners.append(runner)
        host, port = parse_listen(cfg.local_api.listen)
        with _binding("local_api", cfg.local_api.listen):
            self.local_port = await self._serve(create_local_app(self), host, port, local_ssl)
        digest = hashlib.sha256(Path(cfg.path).read_bytes()).hexdigest() if cfg.path else ""
        await self.record_audit(
            leaves.config_loaded(self.now_ms(), digest, cfg.peer_api.allow_plain_http)
        )
        await self.sign_checkpoint()
        self.ready = True
        self.outbox.start()
        # Wake-ups from the other processes on the same database (nothing on SQLite);
        # the periodic watch and the workers' idle poll are the fallback.
        self._stop_listening = self.store.listen(self._changed_elsewhere)
        self.services.catchup.start()
        self._tasks.append(asyncio.create_task(self._watch(), name="watch"))
        self._tasks.append(asyncio.create_task(self._checkpoints(), name="checkpoints"))
        self._tasks.append(asyncio.create_task(self.health.run(), name="write-probe"))
        self.log.info(
            "node.started",
            peer_port=self.peer_port,
            local_port=self.local_port,
            peers=len(self.directory.peers),
        )

    def _local_api_tls(self) -> ssl.SSLContext | None:
        """TLS 1.2+ for the local API when the config names its files (start-up refuses
        a file that is missing, too open or does not load: one line naming it)."""
        api = self.config.local_api
        if not api.tls_cert_file:
            return None
        try:
            return local_api_server_context(
                self.config.relative_path(api.tls_cert_file),
                self.config.relative_path(api.tls_key_file),
            )
        except ValueError as exc:
            raise ConfigError(f"{self.config.path}: [local_api] tls_cert_file: {exc}") from None

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
        # audit thread.
        self._checkpoint_note = cp.note.encode()
        self.metrics.audit_size.set(cp.tree_size)
        self._latest_checkpoint = cp
        if self.witnesses.witnesses:
            self._spawn(self.witnesses.push(cp))

    async def push_to_witnesses(self) -> None:
        """Push the latest checkpoint to the configured witnesses now and wait (the
        periodic checkpoint does it in the background)."""
        if self._latest_checkpoint is not None:
            await self.witnesses.push(self._latest_checkpoint, wait=True)

    async def _checkpoints(self) -> None:
        while True:
            await asyncio.sleep(self.config.audit.checkpoint_interval_seconds)
            try:
                await self.sign_checkpoint()
            except Exception as exc:
                self.log.error("audit.checkpoint_failed", error=str(exc))

    async def _watch(self) -> None:
        """Pick up changes other processes (the CLI) made: peers, pauses, our own card;
        refresh queue gauges; warn of what expires soon once a day; run the retention
        schedule every ``[retention] interval_seconds`` (services/retention.py)."""
        last_purge: float | None = None  # at start-up, then every interval
        last_expiry_warning: float | None = None  # at start-up, then daily
        while True:
            await asyncio.sleep(0.5)
            try:
                if self.directory.changed_in_store(self.store.list_peers()):
                    self.directory.reload()
                mtime = (self.config.data_path / "card.pb").stat().st_mtime_ns
                if mtime != self._card_mtime:
                    self._card_mtime = mtime
                    keys = load_identity(self.config.data_path, self.identity.passphrase)
                    self.identity.keys = keys
                    # On the audit thread, behind any checkpoint being signed: the key
                    # and the public key the log records change together.
                    await asyncio.get_running_loop().run_in_executor(
                        self._audit_executor,
                        self.audit.set_signing_key,
                        keys.local.signing_key.private,
                    )
                    self.log.info("identity.reloaded", serial=keys.card.serial)
                self.update_gauges()
                self.handshake_refusals.flush()
                self.request_refusals.flush()
                if last_expiry_warning is None or time.monotonic() - last_expiry_warning > 86400:
                    last_expiry_warning = time.monotonic()
                    self.warn_expiring()
                if (
                    last_purge is None
                    or time.monotonic() - last_purge > self.config.retention.interval_seconds
                ):
                    last_purge = time.monotonic()
                    await self.run_retention()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.error("node.watch_failed", error=str(exc))

    async def run_retention(self):
        """One run of the retention schedule, then the review gauge refreshed (it scans
        the records, so it is counted at this pace, not with the queue gauges)."""
        report = await self.services.retention.run()
        self.update_review_gauge()
        return report

    def update_review_gauge(self) -> None:
        for record_type, count in self.services.retention.reviews_due_count().items():
            self.metrics.reviews_due.labels(record_type).set(count)

    def expiries(self) -> list[Expiry]:
        """This node's and the pinned peers' certificates and current keys that end."""
        return all_expiries(
            self.identity.keys.card, self.directory.peers.values(), local_api_cert(self.config)
        )

    def warn_expiring(self) -> None:
        """Log what expires within the warning period (start-up and once a day)."""
        now = self.now_ms()
        for e in due(self.expiries(), now):
            self.log.warning(
                "expiry.soon",
                owner=e.owner,
                what=e.what,
                not_after_ms=e.not_after_ms,
                days_left=round(e.left_ms(now) / 86_400_000, 1),
            )

    def update_gauges(self) -> None:
        now = self.now_ms()
        if (wal := self.store.wal_bytes()) is not None:
            self.metrics.store_wal_bytes.set(wal)
        for e in self.expiries():
            self.metrics.expiry.labels(e.owner, e.what).set(e.left_ms(now) / 1000)
        for q in self.store.queue_stats():
            self.metrics.queue_depth.labels(q.peer_id).set(q.depth)
            self.metrics.dead.labels(q.peer_id).set(q.dead)
            age = (now - q.oldest_queued_at) / 1000 if q.oldest_queued_at else 0
            self.metrics.oldest_age.labels(q.peer_id).set(age)
        for c in self.store.catchup_progress():
            self.metrics.catchup.labels(c.row.peer_id, "queued").set(c.row.queued)
            self.metrics.catchup.labels(c.row.peer_id, "delivered").set(c.delivered)
            self.metrics.catchup.labels(c.row.peer_id, "remaining").set(c.remaining)
            eta = c.eta_s(now)
            self.metrics.catchup_eta.labels(c.row.peer_id).set(math.nan if eta is None else eta)

    def _spawn(self, coro) -> None:
        """Run one-off work (an audit leaf, a worker stop) in the background; it is
        finished, not cancelled, when the node stops."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("node.background_failed", error=repr(task.exception()))

    def _changed_elsewhere(self, what: str) -> None:
        """Another process changed rows: ``outbox:<peer>`` (queued for that peer),
        ``peers``, ``meta`` (revocations), ``tokens``, or ``*`` (the notifications
        were interrupted: anything)."""
        kind, _, peer_id = what.partition(":")
        if kind == "outbox":
            self.outbox.wake(peer_id)
            return
        if kind in ("peers", "meta", "*"):
            self.directory.force_reload()  # the watch reloads at its next tick
        if kind in ("tokens", "*"):
            forget_tokens(self)
        if kind == "*":
            for peer_id in list(self.outbox.workers):
                self.outbox.wake(peer_id)

    async def stop(self) -> None:
        self.ready = False
        self._stop_listening()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.services.catchup.stop()
        await self.outbox.stop()
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        await self.client.close()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.store.close()
        self._audit_executor.shutdown(wait=True)
        self.inbound.close()
        self.audit.close()
        self.log.info("node.stopped")
