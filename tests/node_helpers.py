"""Shared material for the node runtime tests: real nodes in temporary directories.

A plain module (not conftest.py) so each test file states what it uses. A
:class:`NodeDir` is one node's identity and config on disk; :class:`Net` builds several,
pins them to each other, and opens/starts/stops them in this process. Ports are chosen
free before the identity is made, because the card carries the endpoint and
``Node.start`` binds the configured address.

Run as a script, this module is a node process with a crash hook for the tests that
need a receiver killed at an exact point (see :func:`serve_main`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from exchange_node.audit.log import AuditLog  # noqa: E402
from exchange_node.config import Config, load_config, render_config  # noqa: E402
from exchange_node.identity import NodeKeys, create_identity, load_identity  # noqa: E402
from exchange_node.node import Node, open_store  # noqa: E402
from exchange_node.pb.exchange.v1 import envelope_pb2, notice_pb2  # noqa: E402
from exchange_node.protocol.keys import Suite  # noqa: E402
from exchange_node.store.records import OutboxState  # noqa: E402
from exchange_node.store.sqlite import SqliteStore  # noqa: E402

COUNTRIES = {"JPN-ISA": "JPN", "PHL-DFA": "PHL", "IOM-MNL": "XOM", "THA-IMM": "THA"}

# Fast retries: an outage in a test lasts a fraction of a second.
FAST_DELIVERY = {"backoff_initial_ms": 20, "backoff_max_ms": 200}

NEW_DATABASE: Callable[[], str] | None = None
"""While set (the ``node_store_backend`` fixture of tests/pg_harness.py, on its
PostgreSQL run), every node made here keeps its store in a PostgreSQL database of its
own: this returns the new database's URL. None: SQLite in the data directory."""


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, never one this process handed out before: the
    kernel may give the same free port to two binds in a row, and two nodes of one test
    then share a port (seen once in a full run: listen_address_in_use)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def set_options(text: str, options: dict[str, Any]) -> str:
    """Replace ``key = value`` lines of a rendered config (keys used here are unique)."""
    for key, value in options.items():
        rendered = json.dumps(value) if isinstance(value, str) else str(value).lower()
        text, n = re.subn(rf"(?m)^{key} = [^#\n]*", f"{key} = {rendered} ", text)
        assert n == 1, f"{key} is not a line of the rendered config"
    return text


@dataclass
class NodeDir:
    """One node on disk: ``dir/node.toml`` and ``dir/data``."""

    node_id: str
    dir: Path
    peer_port: int
    tls: bool
    node: Node | None = None

    @property
    def config_path(self) -> Path:
        return self.dir / "node.toml"

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.peer_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def config(self) -> Config:
        return load_config(self.config_path)

    def keys(self) -> NodeKeys:
        return load_identity(self.data)

    @property
    def running(self) -> Node:
        assert self.node is not None, f"{self.node_id} is not open"
        return self.node

    async def open(self) -> Node:
        self.node = await Node.open(self.config())
        return self.node

    async def start(self) -> Node:
        node = self.node or await self.open()
        await node.start()
        return node

    async def stop(self) -> None:
        if self.node is not None:
            node, self.node = self.node, None
            await node.stop()  # also right for a node opened but never started


def make_node_dir(
    root: Path,
    node_id: str,
    *,
    tls: bool = False,
    options: dict[str, Any] | None = None,
    peer_port: int | None = None,
) -> NodeDir:
    """Create an identity and a config for ``node_id`` under ``root/<id>``."""
    port = peer_port or free_port()
    nd = NodeDir(node_id, root / node_id.lower(), port, tls)
    nd.dir.mkdir(parents=True)
    text = render_config(
        node_id=node_id,
        country=COUNTRIES.get(node_id, node_id[:3]),
        display_name=node_id,
        public_endpoint=nd.endpoint,
        peer_listen=f"127.0.0.1:{port}",
        local_listen="127.0.0.1:0",
        allow_plain_http=not tls,
    )
    text = set_options(text, {**FAST_DELIVERY, **(options or {})})
    if NEW_DATABASE is not None:
        text += f'\n[store]\nurl = "{NEW_DATABASE()}"\n'
    nd.config_path.write_text(text)
    cfg = nd.config()
    create_identity(
        nd.data,
        node_id=node_id,
        country=cfg.node.country,
        display_name=node_id,
        endpoint=nd.endpoint,
        suite=Suite.parse(cfg.node.suite),
        now_ms=now_ms(),
    )
    return nd


async def pin(at: NodeDir, card: bytes, fingerprint: str, node_id: str) -> None:
    """Pin a card in ``at``'s store (open or not) and let a running node see it."""
    if at.node is not None:
        await at.node.store.upsert_peer(node_id, card, fingerprint, now_ms())
        at.node.reload_peers()
        return
    store = await open_store(at.config())
    try:
        await store.upsert_peer(node_id, card, fingerprint, now_ms())
    finally:
        await store.close()


@dataclass
class Net:
    """Several nodes under one directory, each pinning the others."""

    root: Path
    nodes: dict[str, NodeDir] = field(default_factory=dict)

    def __getitem__(self, node_id: str) -> NodeDir:
        return self.nodes[node_id]

    async def stop_all(self) -> None:
        for nd in self.nodes.values():
            await nd.stop()


async def make_net(
    root: Path,
    ids: Sequence[str],
    *,
    tls: bool = False,
    options: dict[str, dict[str, Any]] | None = None,
    pins: Sequence[tuple[str, str]] | None = None,
) -> Net:
    """Create nodes and pin them: every pair by default, or only ``(at, whom)`` pairs."""
    net = Net(root)
    for node_id in ids:
        net.nodes[node_id] = make_node_dir(
            root, node_id, tls=tls, options=(options or {}).get(node_id)
        )
    pairs = pins if pins is not None else [(a, b) for a in ids for b in ids if a != b]
    for a, b in pairs:
        keys = net[b].keys()
        await pin(net[a], keys.card_bytes, keys.fingerprint, b)
    return net


# --- notices and batches --------------------------------------------------------------------


def status_notice(number: str = "P1234567") -> notice_pb2.Body:
    return notice_pb2.Body(
        status_notice=notice_pb2.TravelDocumentStatusNotice(
            notice_id=secrets.token_bytes(16),
            document=notice_pb2.DocumentRef(
                issuing_state="PHL", document_type="P", document_number=number
            ),
            status=notice_pb2.DOCUMENT_STATUS_STOLEN,
            effective_at_ms=now_ms() - 60_000,
        )
    )


def fraud_notice(number: str = "P7654321") -> notice_pb2.Body:
    return notice_pb2.Body(
        fraud_notice=notice_pb2.FraudDetectionNotice(
            notice_id=secrets.token_bytes(16),
            document=notice_pb2.DocumentRef(
                issuing_state="PHL", document_type="P", document_number=number
            ),
            fraud_type=notice_pb2.FRAUD_TYPE_COUNTERFEIT,
            detected_at_ms=now_ms() - 60_000,
            detection_place="JPNRT",
            detecting_authority="Immigration Services Agency, Narita Airport",
        )
    )


def batch_bytes(sender: str, envelopes: Sequence[bytes], batch_id: bytes | None = None) -> bytes:
    return envelope_pb2.Batch(
        batch_id=batch_id or os.urandom(16), sender=sender, envelopes=list(envelopes)
    ).SerializeToString()


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# --- waiting --------------------------------------------------------------------------------


async def wait_for(
    predicate: Callable[[], Any | Awaitable[Any]], *, timeout: float = 15, what: str = ""
) -> Any:
    """Poll until ``predicate()`` is truthy; return its value. AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.02)


def settled(store: SqliteStore, message_ids: Sequence[bytes]) -> bool:
    """Every message has left the queue (delivered or dead) for every recipient."""
    for mid in message_ids:
        rows = store.message_status(mid)
        if not rows or any(r.state is OutboxState.QUEUED for r in rows):
            return False
    return True


def audit_leaves(audit: AuditLog, kind: str) -> list:
    return [leaf.record for leaf in audit.query(kind=kind, limit=10_000)]


# --- the command line in this process ---------------------------------------------------------


def run_cli(args: Sequence[str]) -> int:
    """``exchange-node ARGS`` in this process (call it off the event loop thread: it runs
    its own loop). Restores the log set-up the CLI replaces, so later tests' logs do not
    go to a stream captured for this one."""
    import structlog

    from exchange_node.cli import main

    saved = structlog.get_config()
    try:
        return main(list(args))
    finally:
        structlog.configure(**saved)


# --- node processes ---------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def start_serve(
    nd: NodeDir,
    *extra: str,
    script: Sequence[str] | None = None,
    config: Path | None = None,
    ready: Path | None = None,
) -> subprocess.Popen:
    """Start ``exchange-node serve`` (or ``script``) for ``nd`` (with another ``config``
    of the same node: a second process); return once it is ready (``ready``: its
    ready file, default ``ready.json``)."""
    ready = ready or nd.dir / "ready.json"
    ready.unlink(missing_ok=True)
    log = open(nd.dir / "node.log", "ab")  # noqa: SIM115 - kept open for the child
    cmd = list(script) if script else [sys.executable, "-m", "exchange_node.cli"]
    config = config or nd.config_path
    proc = subprocess.Popen(
        [*cmd, "--config", str(config), "serve", "--ready-file", str(ready), *extra],
        stdout=log,
        stderr=log,
        env=child_env(),
    )
    log.close()
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{nd.node_id} did not start: {(nd.dir / 'node.log').read_text()}")
        time.sleep(0.02)
    return proc


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def serve_main(config: str, ready_file: str, crash_marker: str | None) -> None:
    """A node process. With ``crash_marker``: the first time a batch has been durably
    stored (``store.accept`` returned) and before its receipt is signed, create the
    marker and SIGKILL this process, unless the marker already exists."""
    node = await Node.open(load_config(config))

    def crash(accepted) -> None:
        if crash_marker and accepted and not os.path.exists(crash_marker):
            Path(crash_marker).write_text(json.dumps([r.message_id.hex() for r in accepted]))
            os.kill(os.getpid(), signal.SIGKILL)

    node.inbound.on_accepted.append(crash)
    await node.start()
    part = Path(ready_file + ".part")  # whole or absent, as `serve --ready-file` writes it
    part.write_text(json.dumps({"peer_port": node.peer_port, "local_port": node.local_port}))
    part.replace(ready_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await node.stop()


async def submit_notice_main(config: str, peer: str, number: str) -> None:
    """A sender process that submits one fraud detection through the notice service (the
    local API's path: indexed and queued), printing its message id when it returns."""
    from exchange_node.domain.documents import Detection, NoticeKind
    from exchange_node.services.notices import NoticeDraft

    node = await Node.open(load_config(config))
    draft = NoticeDraft(
        kind=NoticeKind.COUNTERFEIT,
        document=notice_pb2.DocumentRef(
            issuing_state="PHL", document_type="P", document_number=number
        ),
        detection=Detection("JPNRT", now_ms() - 60_000, "Narita"),
    )
    _, [sub] = await node.services.notices.submit(draft, [peer], actor="crash-test")
    print("ack", sub.message_id.hex(), flush=True)
    await node.stop()


async def open_case_main(config: str, peer: str) -> None:
    """A process that opens one repatriation case with ``peer`` as the origin state and
    records consent, printing the case reference after each step returns."""
    from exchange_node.domain.repatriation import EventType, Participant, Role

    node = await Node.open(load_config(config))
    cases = node.services.cases
    case, _ = await cases.open_case([Participant(peer, Role.ORIGIN_STATE)], None, "", actor="t")
    print("opened", case.case_ref, flush=True)
    await cases.add_event(case.case_ref, EventType.RECORD_CONSENT, "", actor="t")
    print("consent", case.case_ref, flush=True)
    await node.stop()


async def submit_main(config: str, peer: str) -> None:
    """A sender process: submit notices to ``peer`` forever, printing each message id once
    ``Node.submit`` has returned (the submission is acknowledged: durable)."""
    node = await Node.open(load_config(config))
    await node.start()
    n = 0
    while True:
        [sub] = await node.submit(fraud_notice(f"P{n:07d}"), [peer])
        print("ack", sub.message_id.hex(), flush=True)
        n += 1


def main(argv: list[str]) -> None:
    """``node_helpers.py --config C serve --ready-file F [--crash-after-accept M]``,
    ``node_helpers.py --config C submit PEER`` or ``... submit-notice PEER NUMBER``; any
    of them with ``--crash-at LABEL:POINT`` (store/faults.py)."""
    from exchange_node.logs import configure

    configure("warning")  # logs to stderr: stdout carries only acknowledgements
    config = argv[argv.index("--config") + 1]
    if "--crash-at" in argv:
        from exchange_node.store import faults

        faults.arm_from(argv[argv.index("--crash-at") + 1])
    if "open-case" in argv:
        asyncio.run(open_case_main(config, argv[argv.index("open-case") + 1]))
        return
    if "submit-notice" in argv:
        i = argv.index("submit-notice")
        asyncio.run(submit_notice_main(config, argv[i + 1], argv[i + 2]))
        return
    if "submit" in argv:
        asyncio.run(submit_main(config, argv[argv.index("submit") + 1]))
        return
    ready = argv[argv.index("--ready-file") + 1]
    marker = (
        argv[argv.index("--crash-after-accept") + 1] if "--crash-after-accept" in argv else None
    )
    asyncio.run(serve_main(config, ready, marker))


if __name__ == "__main__":
    main(sys.argv[1:])
