"""The budget of refusal entries: at most ``budget`` a window, the rest in one count."""

from __future__ import annotations

from exchange_node.api.peer_server import RefusalAudit
from exchange_node.audit.leaf import AuditEvent, LeafKind
from exchange_node.audit.leaves import handshake_refused


def audit(budget: int = 2) -> tuple[RefusalAudit, list[AuditEvent], list[float]]:
    written: list[AuditEvent] = []
    now = [1000.0]
    log = RefusalAudit(
        kind=LeafKind.AUTH_FAILED,
        operation="peer_api.handshake",
        write=written.append,
        clock=lambda: 1_767_225_600_000,
        budget=budget,
        window_seconds=60,
        monotonic=lambda: now[0],
    )
    return log, written, now


def refusal() -> AuditEvent:
    return handshake_refused(1_767_225_600_000, "tls_certificate_unknown", ("10.0.0.1", "1"), "")


def test_refusals_past_the_budget_are_counted_in_one_entry_when_the_window_ends():
    log, written, now = audit(budget=2)

    results = [log.record(refusal) for _ in range(5)]

    assert results == [True, True, False, False, False]
    assert len(written) == 2
    now[0] += 60
    log.flush()
    [summary] = written[2:]
    assert (summary.kind, summary.reason) == ("auth.failed", "refusals_suppressed")
    assert summary.attrs == {
        "operation": "peer_api.handshake",
        "suppressed": "3",
        "window_seconds": "60",
    }
    # A new window, a new budget; nothing suppressed, no summary.
    assert log.record(refusal)
    now[0] += 60
    log.flush()
    assert len(written) == 4


def test_a_window_without_suppressed_refusals_writes_no_summary():
    log, written, now = audit(budget=5)
    log.record(refusal)
    now[0] += 120
    log.flush()
    assert [e.reason for e in written] == ["tls_certificate_unknown"]
