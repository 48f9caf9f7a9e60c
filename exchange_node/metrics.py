"""Prometheus metrics of one node (its own registry, so several nodes share a process
in tests). Names are stable: dashboards depend on them."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)

from exchange_node.build_info import build_info

# *_created series double the output for no operational value.
disable_created_metrics()


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.queue_depth = Gauge(
            "exchange_outbox_queue_depth", "Queued envelopes per peer", ["peer"], registry=r
        )
        self.oldest_age = Gauge(
            "exchange_outbox_oldest_age_seconds",
            "Age of the oldest queued envelope per peer",
            ["peer"],
            registry=r,
        )
        self.dead = Gauge(
            "exchange_outbox_dead_letters", "Dead letters per peer", ["peer"], registry=r
        )
        self.expiry = Gauge(
            "exchange_expiry_seconds",
            "Seconds until a TLS certificate or current key expires (negative: expired),"
            " this node's and each pinned peer's",
            ["node", "what"],
            registry=r,
        )
        self.catchup = Gauge(
            "exchange_catchup_notices",
            "A peer's catch-up: notices queued, delivered, remaining to queue",
            ["peer", "count"],
            registry=r,
        )
        self.catchup_eta = Gauge(
            "exchange_catchup_eta_seconds",
            "A running catch-up's time left, at the rate delivered so far (NaN: not known"
            " yet, or paused)",
            ["peer"],
            registry=r,
        )
        self.catchup_live_wait = Counter(
            "exchange_catchup_live_wait_seconds",
            "Seconds catch-up steps waited for live work under way in the node",
            registry=r,
        )
        self.reviews_due = Gauge(
            "exchange_records_due_for_review",
            "Records due for their periodic review (keep with a reason, or purge)",
            ["record_type"],
            registry=r,
        )
        self.send_latency = Histogram(
            "exchange_batch_send_seconds",
            "Time from POSTing a batch to a verified receipt",
            ["peer"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.batch_size = Histogram(
            "exchange_batch_envelopes",
            "Envelopes per batch sent",
            ["peer"],
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=r,
        )
        self.sent = Counter(
            "exchange_envelopes_sent_total",
            "Envelope outcomes reported by peers' receipts",
            ["peer", "outcome", "reason"],
            registry=r,
        )
        self.received = Counter(
            "exchange_envelopes_received_total",
            "Envelopes received, by outcome and reason",
            ["peer", "outcome", "reason"],
            registry=r,
        )
        self.delivery_errors = Counter(
            "exchange_delivery_errors_total",
            "Failed batch deliveries (retried)",
            ["peer"],
            registry=r,
        )
        self.overload = Counter(
            "exchange_batches_refused_overload_total", "Batches answered 429", registry=r
        )
        self.peer_limit = Counter(
            "exchange_batches_refused_peer_limit_total",
            "Batches answered 429 because their peer held its share of the slots",
            ["peer"],
            registry=r,
        )
        self.handshakes_refused = Counter(
            "exchange_peer_handshakes_refused_total",
            "Connections to the peer API refused in the TLS handshake",
            ["reason"],
            registry=r,
        )
        self.requests_refused = Counter(
            "exchange_peer_requests_refused_total",
            "Peer API requests refused before a handler took them (malformed, unknown path)",
            ["code"],
            registry=r,
        )
        self.refusal_audit_suppressed = Counter(
            "exchange_refusal_audit_suppressed_total",
            "Refusals past the audit budget: counted in one summary entry, not one each",
            ["operation"],
            registry=r,
        )
        self.checkpoint_alarm = Counter(
            "exchange_peer_checkpoint_inconsistent_total",
            "Peer audit checkpoints that contradict earlier ones",
            ["peer"],
            registry=r,
        )
        self.witness_push_failed = Counter(
            "exchange_witness_push_failed_total",
            "Pushes of this node's checkpoint to a witness that got no cosignature",
            ["witness"],
            registry=r,
        )
        self.witness_refused = Counter(
            "exchange_witness_refused_total",
            "add-checkpoint requests this node refused as a witness, by code",
            ["code"],
            registry=r,
        )
        self.checkpoint_unchecked = Counter(
            "exchange_peer_checkpoint_unchecked_total",
            "Peer audit checkpoints left unchecked for now (no proof answer); asked again later",
            ["peer"],
            registry=r,
        )
        self.audit_size = Gauge("exchange_audit_tree_size", "Leaves in the audit log", registry=r)
        # 1 while the latest write (or write probe) committed, 0 once the database
        # refused one; /readyz answers 503 while either is 0.
        self.store_writable = Gauge(
            "exchange_store_writable", "Whether the store took its latest write", registry=r
        )
        self.store_wal_bytes = Gauge(
            "exchange_store_wal_bytes",
            "Size of the SQLite store's write-ahead log file (checkpoints keep it short)",
            registry=r,
        )
        self.audit_writable = Gauge(
            "exchange_audit_writable", "Whether the audit log took its latest append", registry=r
        )
        # exchange_build_info{version=...,protocol=...,python=...,cryptography=...,openssl=...} 1
        Info(
            "exchange_build", "What runs: release, protocol and library versions", registry=r
        ).info(build_info())

    def render(self) -> bytes:
        return generate_latest(self.registry)
