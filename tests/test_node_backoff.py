"""Backoff towards a peer that is down or asks us to wait: new traffic does not cut the
wait short, Retry-After is honoured (capped), and a peer seen again, or an operator's
`peer resume`, is retried at once.

The peer here is a real HTTP server on the pinned peer's port that refuses every batch
and counts them; the sender runs on an injected clock that only the test moves, so "not
before" is a matter of which clock time each attempt arrived at, never of elapsed time.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime

import aiohttp
import pytest
from aiohttp import web

from exchange_node.delivery.worker import retry_after_seconds
from exchange_node.domain.documents import Detection, NoticeKind
from exchange_node.pb.exchange.v1 import envelope_pb2
from exchange_node.pb.exchange.v1.notice_pb2 import DocumentRef
from exchange_node.protocol.envelope import seal
from exchange_node.services.catchup import begin, wanted_kinds
from exchange_node.services.notices import NoticeDraft
from exchange_node.store.records import Lane
from tests.node_helpers import batch_bytes, fraud_notice, make_net, now_ms, run_cli, wait_for

JPN, PHL = "JPN-ISA", "PHL-DFA"
MINUTE_MS = 60_000


class Clock:
    """The sender's clock: stands still until the test moves it."""

    def __init__(self) -> None:
        self.ms = now_ms()

    def __call__(self) -> int:
        return self.ms

    def advance_to(self, ms: int) -> None:
        self.ms = max(self.ms, ms)


@dataclass
class Attempt:
    at: int  # the sender's clock when the batch arrived
    envelopes: int


@dataclass
class RefusingPeer:
    """Answers every batch with ``status`` (and ``headers``); records each one."""

    port: int
    clock: Clock
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    runner: web.AppRunner | None = None

    async def start(self) -> RefusingPeer:
        async def batch(request: web.Request) -> web.Response:
            envelopes = len(envelope_pb2.Batch.FromString(await request.read()).envelopes)
            self.attempts.append(Attempt(self.clock(), envelopes))
            return web.json_response(
                {"code": "unavailable", "detail": "down for maintenance", "status": self.status},
                status=self.status,
                headers=self.headers,
            )

        app = web.Application()
        app.router.add_post("/exchange/v1/batch", batch)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def attempted(self, n: int) -> list[Attempt]:
        await wait_for(lambda: len(self.attempts) >= n, what=f"{n} attempt(s) at the peer")
        return self.attempts


@pytest.fixture
async def setup(tmp_path):
    made = []

    async def make(status: int = 503, headers=None, **delivery):
        net = await make_net(tmp_path, [JPN, PHL], options={JPN: delivery})
        clock = Clock()
        peer = await RefusingPeer(net[PHL].peer_port, clock, status, dict(headers or {})).start()
        jpn = await net[JPN].open()
        jpn.clock = clock
        await jpn.start()
        made.append((net, peer))
        return net, jpn, peer, clock

    yield make
    for net, peer in made:
        await net.stop_all()
        await peer.stop()


async def submit(jpn, n: int) -> None:
    for i in range(n):
        await jpn.submit(fraud_notice(f"P{i:07d}"), [PHL])


async def test_notices_submitted_while_a_peer_is_down_wait_for_the_backoff_not_one_attempt_each(
    setup,
):
    _, jpn, peer, clock = await setup(backoff_initial_ms=MINUTE_MS, backoff_max_ms=MINUTE_MS)
    t0 = clock()
    await submit(jpn, 1)
    await peer.attempted(1)

    await submit(jpn, 19)  # each one used to cut the wait short: 20 attempts, not 2
    clock.advance_to(t0 + MINUTE_MS)  # past the longest first delay of the schedule
    attempts = await peer.attempted(2)

    assert [a.envelopes for a in attempts] == [1, 20]
    assert [a.at for a in attempts] == [t0, t0 + MINUTE_MS]


async def test_a_peer_that_is_down_gets_one_attempt_per_step_from_both_lanes_together(setup):
    _, jpn, peer, clock = await setup(backoff_initial_ms=MINUTE_MS, backoff_max_ms=MINUTE_MS)
    await wait_for(lambda: _catch_up_state(jpn) == "done", what="the (empty) first catch-up")
    t0 = clock()
    drafts = [
        NoticeDraft(
            NoticeKind.COUNTERFEIT,
            DocumentRef(issuing_state="PHL", document_type="P", document_number=number),
            detection=Detection("JPNRT", t0 - 60_000, "Narita"),
        )
        for number in ("P0000001", "P0000002")
    ]  # indexed, sent to no one: notices in effect that a catch-up sends
    await jpn.services.notices.submit_many([(d, []) for d in drafts], actor="t")
    # The operator restarts PHL-DFA's catch-up: the two notices are queued on the
    # catch-up lane, which tries them at once.
    kinds = wanted_kinds(jpn.directory.policy(PHL))
    await jpn.store.transaction(
        lambda tx: begin(tx, PHL, JPN, kinds, kinds, clock()), label="catchup.begin"
    )
    jpn.services.catchup.wake()
    await peer.attempted(1)
    await wait_for(
        lambda: [r.attempts for r in jpn.store.pending(PHL, 10, Lane.CATCHUP)] == [1, 1],
        what="the first attempt recorded",
    )
    await submit(jpn, 3)  # the live lane, with the peer already down

    clock.advance_to(t0 + MINUTE_MS)
    await peer.attempted(2)
    clock.advance_to(t0 + 2 * MINUTE_MS)
    attempts = await peer.attempted(3)

    # One lane per step, never both at once: the two lanes took turns.
    assert [a.at for a in attempts] == [t0, t0 + MINUTE_MS, t0 + 2 * MINUTE_MS]
    assert attempts[0].envelopes == 2
    assert sorted(a.envelopes for a in attempts[1:]) == [2, 3]
    await wait_for(
        lambda: sum(r.attempts for r in jpn.store.pending(PHL, 10)) == 2 + 2 + 3,
        what="every attempt recorded",
    )


def _catch_up_state(node) -> str | None:
    row = node.store.catchup(PHL)
    return row.state if row is not None else None


def _http_date(ms: int) -> tuple[str, int]:
    """The HTTP-date of the first whole second at or after ``ms``, and that second in ms."""
    second = math.ceil(ms / 1000)
    return format_datetime(datetime.fromtimestamp(second, UTC), usegmt=True), second * 1000


@pytest.mark.parametrize(
    ("status", "form"), [(429, "delta-seconds"), (503, "HTTP-date")], ids=["429", "503"]
)
async def test_a_refusal_with_retry_after_is_not_retried_before_the_time_it_names(
    setup, status, form
):
    headers: dict[str, str] = {}
    # The schedule's cap above the 120 s asked for: the tests' fast default (200 ms)
    # would cut it short, and the retry come as soon as the clock moves at all.
    net, jpn, peer, clock = await setup(
        status, headers, backoff_initial_ms=20, backoff_max_ms=10 * MINUTE_MS
    )
    t0 = clock()
    if form == "delta-seconds":
        peer.headers["Retry-After"], due = "120", t0 + 120_000
    else:
        peer.headers["Retry-After"], due = _http_date(t0 + 120_000)
    await submit(jpn, 1)
    await peer.attempted(1)

    await submit(jpn, 5)
    clock.advance_to(t0 + 60_000)  # far past the schedule's own 20 ms
    await submit(jpn, 1)
    clock.advance_to(due)
    attempts = await peer.attempted(2)

    assert attempts[1].at >= due
    assert [a.envelopes for a in attempts] == [1, 7]


async def test_a_retry_after_beyond_backoff_max_waits_only_backoff_max(setup):
    _, jpn, peer, clock = await setup(
        429, {"Retry-After": "86400"}, backoff_initial_ms=20, backoff_max_ms=10 * MINUTE_MS
    )
    t0 = clock()
    await submit(jpn, 1)
    await peer.attempted(1)

    clock.advance_to(t0 + 10 * MINUTE_MS)
    attempts = await peer.attempted(2)

    assert attempts[1].at == t0 + 10 * MINUTE_MS


async def test_a_peer_that_sends_us_a_batch_is_retried_at_once(setup):
    net, jpn, peer, clock = await setup(backoff_initial_ms=MINUTE_MS, backoff_max_ms=MINUTE_MS)
    t0 = clock()
    await submit(jpn, 1)
    await peer.attempted(1)

    phl = net[PHL].keys()
    sealed = seal(
        fraud_notice().SerializeToString(),
        sender=phl.local,
        recipient=jpn.keys.card,
        now_ms=clock(),
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            net[JPN].url + "/exchange/v1/batch",
            data=batch_bytes(PHL, [sealed.data]),
            headers={"Content-Type": "application/x-protobuf"},
        ) as resp,
    ):
        assert resp.status == 200
    attempts = await peer.attempted(2)

    assert [a.at for a in attempts] == [t0, t0]  # the clock never moved


async def test_an_operator_resuming_a_peer_retries_it_at_once(setup):
    net, jpn, peer, clock = await setup(backoff_initial_ms=MINUTE_MS, backoff_max_ms=MINUTE_MS)
    t0 = clock()
    await submit(jpn, 1)
    await peer.attempted(1)

    code = await asyncio.to_thread(
        run_cli, ["--config", str(net[JPN].config_path), "peer", "resume", PHL]
    )
    attempts = await peer.attempted(2)

    assert code == 0
    assert [a.at for a in attempts] == [t0, t0]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("Sun, 06 Nov 1994 08:51:37 GMT", 120.0),  # IMF-fixdate
        ("Sunday, 06-Nov-94 08:51:37 GMT", 120.0),  # obsolete RFC 850 form
        ("Sun Nov  6 08:51:37 1994", 120.0),  # obsolete asctime form
        ("Sun, 06 Nov 1994 08:00:00 GMT", 0.0),  # a date already past: at once
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_read_as_delta_seconds_or_an_http_date(value, seconds):
    now = 784111777_000  # Sun, 06 Nov 1994 08:49:37 GMT

    assert retry_after_seconds(value, now) == seconds
