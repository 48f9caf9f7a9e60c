"""What the overview shows: each peer's queue and delivery state, catch-ups, the alerts.

Read from the running node only (its store, its workers' backoff, its keys and the
audit log), nothing written: the page is reloaded every few seconds.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509

from exchange_node.audit.leaf import LeafKind
from exchange_node.console.words import duration, when
from exchange_node.protocol.cards import PeerCard, verify_card
from exchange_node.store.records import CatchUpProgress, PeerRecord, QueueStats

if TYPE_CHECKING:
    from exchange_node.node import Node

DAY_MS = 86_400_000
EXPIRY_WARNING_MS = 30 * DAY_MS
"""Keys and certificates are flagged this long before they expire."""
DISK_FREE_MIN_BYTES = 1 << 30
DISK_FREE_MIN_RATIO = 0.05


@dataclass(frozen=True)
class PeerState:
    """One pinned peer (or a removed one with outbox history) as the pages show it."""

    peer_id: str
    record: PeerRecord | None
    card: PeerCard | None
    queue: QueueStats | None
    failed_attempts: int  # consecutive failures the worker is backing off from

    @property
    def backlog(self) -> int:
        return self.queue.depth if self.queue else 0

    @property
    def dead(self) -> int:
        return self.queue.dead if self.queue else 0

    @property
    def in_backoff(self) -> bool:
        return self.failed_attempts > 0

    @property
    def failing(self) -> bool:
        """The latest contact failed (cleared by the next success)."""
        q = self.queue
        return bool(q and q.last_error)


@dataclass(frozen=True)
class CatchUpState:
    """One peer's catch-up as the overview shows it (``services/catchup.py``)."""

    progress: CatchUpProgress
    eta_ms: int | None  # time left at the rate so far; None while paused or not known

    @property
    def peer_id(self) -> str:
        return self.progress.row.peer_id


def catchups(node: Node) -> list[CatchUpState]:
    """Each peer's catch-up (not the placeholder rows of peers pinned before catch-up
    existed), with its time left."""
    now = node.now_ms()
    found = []
    for c in node.store.catchup_progress():
        if c.row.kinds is None:
            continue
        eta = c.eta_s(now)
        found.append(CatchUpState(c, None if eta is None else round(eta * 1000)))
    return found


@dataclass(frozen=True)
class Alert:
    level: str  # "warning" | "critical"
    text: str
    link: str = ""


def peer_states(node: Node) -> list[PeerState]:
    records = {p.node_id: p for p in node.store.list_peers()}
    queues = {q.peer_id: q for q in node.store.queue_stats()}
    out = []
    for peer_id in sorted(records.keys() | queues.keys()):
        record = records.get(peer_id)
        worker = node.outbox.workers.get(peer_id)
        out.append(
            PeerState(
                peer_id=peer_id,
                record=record,
                card=verify_card(record.card) if record else None,
                queue=queues.get(peer_id),
                failed_attempts=worker.backoff.attempt if worker else 0,
            )
        )
    return out


def _expiry_alerts(node: Node, now: int) -> list[Alert]:
    alerts = []
    keys = node.keys
    for entry in keys.card.signing_keys[:1] + keys.card.encryption_keys[:1]:
        if entry.not_after_ms and entry.not_after_ms - now < EXPIRY_WARNING_MS:
            alerts.append(
                Alert(
                    "critical" if entry.not_after_ms <= now else "warning",
                    f"this node's key {entry.key_id.hex()[:16]} expires "
                    f"{_in(entry.not_after_ms, now)}: run `exchange-node keys rotate`",
                    "/console/tokens",
                )
            )
    certificates = [("this node's TLS certificate", keys.tls_cert_der, "/console/tokens")]
    certificates += [
        (f"{peer_id}'s TLS certificate", card.tls_certificate, f"/console/peers/{peer_id}")
        for peer_id, card in sorted(node.keyring.peers.items())
    ]
    for what, der, link in certificates:
        not_after = _not_after_ms(der)
        if not_after is not None and not_after - now < EXPIRY_WARNING_MS:
            level = "critical" if not_after <= now else "warning"
            alerts.append(Alert(level, f"{what} expires {_in(not_after, now)}", link))
    return alerts


def _not_after_ms(der: bytes) -> int | None:
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None
    return int(cert.not_valid_after_utc.timestamp() * 1000)


def _in(t: int, now: int) -> str:
    return f"on {when(t)} (in {duration(t - now)})" if t > now else f"on {when(t)} (expired)"


def alerts(node: Node, states: list[PeerState]) -> list[Alert]:
    now = node.now_ms()
    out = []
    if not node.ready:
        out.append(Alert("critical", "the node is starting or stopping"))
    for reason in node.health.reasons():
        out.append(Alert("critical", f"not ready ({reason.code}): {reason.detail}"))
    for s in states:
        if s.record and s.record.paused:
            out.append(
                Alert("warning", f"delivery to {s.peer_id} is paused by an operator",
                      f"/console/peers/{s.peer_id}")
            )  # fmt: skip
        elif s.in_backoff:
            out.append(
                Alert(
                    "warning",
                    f"{s.peer_id} is in backoff after {s.failed_attempts} failed attempt(s); "
                    f"{s.backlog} message(s) wait",
                    f"/console/peers/{s.peer_id}",
                )
            )
    dead = sum(s.dead for s in states)
    if dead:
        out.append(
            Alert("warning", f"{dead} dead letter(s) wait for a person", "/console/dead-letters")
        )
    seen = set()
    for leaf in node.audit.query(kind=LeafKind.CHECKPOINT_INCONSISTENT, limit=100):
        peer = leaf.record.peer
        if peer not in seen:
            seen.add(peer)
            out.append(
                Alert(
                    "critical",
                    f"{peer}'s audit checkpoint is inconsistent with one it signed before "
                    f"({leaf.record.reason}): its log may have been rewritten",
                    f"/console/audit?kind={LeafKind.CHECKPOINT_INCONSISTENT}&peer={peer}",
                )
            )
    out += _expiry_alerts(node, now)
    out += disk_alerts(node)
    out += protection_alerts(node)
    return out


def protection_alerts(node: Node) -> list[Alert]:
    """Records due for their periodic review, and purge notices a peer has not
    confirmed (the counts of ``status``: ``reviews_due``, ``purges_unconfirmed``)."""
    out = []
    due = node.services.retention.reviews_due_total()
    if due:
        out.append(
            Alert("warning", f"{due} record(s) due for periodic review: keep or purge each",
                  "/console/protection")
        )  # fmt: skip
    unconfirmed = node.services.cases.unconfirmed_purges()
    if unconfirmed:
        out.append(
            Alert("warning", f"{unconfirmed} purge notice(s) not confirmed by a peer yet",
                  "/console/protection")
        )  # fmt: skip
    return out


def disk(node: Node):
    """Total, used and free bytes of the disk that holds the data directory."""
    return shutil.disk_usage(node.config.data_path)


def disk_alerts(node: Node) -> list[Alert]:
    usage = disk(node)
    alert = disk_alert(usage.total, usage.free)
    return [alert] if alert else []


def disk_alert(total: int, free: int) -> Alert | None:
    """Critical below 1 GiB or 5% free: a full disk stops every write (and readiness)."""
    if free >= DISK_FREE_MIN_BYTES and free >= total * DISK_FREE_MIN_RATIO:
        return None
    return Alert(
        "critical",
        f"only {free / (1 << 30):.1f} GiB free on the data directory's disk "
        f"({100 * free / total:.0f}%): the node stops taking writes when it is full",
    )
