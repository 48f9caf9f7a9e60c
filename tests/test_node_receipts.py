"""What the sender does with a receipt it cannot accept: nothing counts as delivered, the
refusal is audited, and the batch is sent again."""

from __future__ import annotations

import pytest
from aiohttp import web

from exchange_node.audit.leaf import LeafKind
from exchange_node.store.records import OutboxState
from tests.node_helpers import audit_leaves, fraud_notice, make_net, wait_for

pytestmark = pytest.mark.usefixtures("node_store_backend")

JPN, PHL = "JPN-ISA", "PHL-DFA"


@pytest.fixture
async def net(tmp_path):
    net = await make_net(tmp_path, [JPN, PHL], pins=[(JPN, PHL)])
    yield net
    await net.stop_all()


async def test_a_receipt_that_does_not_verify_is_audited_and_delivers_nothing(net):
    posts = []

    async def answer_with_junk(request: web.Request) -> web.Response:
        posts.append(await request.read())
        return web.Response(body=b"\x0a\x03not a receipt", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/exchange/v1/batch", answer_with_junk)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", net[PHL].peer_port).start()
    try:
        jpn = await net[JPN].start()
        [sub] = await jpn.submit(fraud_notice(), [PHL])

        def refused():
            return [
                leaf
                for leaf in audit_leaves(jpn.audit, LeafKind.RECEIPT_RECEIVED)
                if leaf.attrs.get("outcome") == "refused"
            ]

        [leaf, *_] = await wait_for(refused, what="an audited receipt refusal")
        assert leaf.peer == PHL and leaf.reason == "malformed"
        [row] = jpn.store.message_status(sub.message_id)
        assert row.state is OutboxState.QUEUED and row.receipt_id is None
        assert posts, "the batch reached the peer"
    finally:
        await runner.cleanup()
