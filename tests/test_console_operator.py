"""The operator's console pages and actions on two real nodes: each action changes what
the command line would change, with its audit leaf naming the signed-in token."""

from __future__ import annotations

import aiohttp
import pytest
from console_support import browser, csrf_of
from node_helpers import fraud_notice, wait_for
from test_api_support import make_node, pin_all, token

from exchange_node.domain.documents import NoticeKind
from exchange_node.pb.exchange.v1 import notice_pb2
from exchange_node.services.catchup import begin, wanted_kinds
from exchange_node.services.notices import NoticeDraft
from exchange_node.store.records import OutboxState


@pytest.fixture
async def pair(tmp_path):
    # PHL-DFA takes no fraud notices from JPN-ISA: one sent becomes a dead letter.
    jpn = await make_node(tmp_path, "JPN-ISA", "JPN")
    phl = await make_node(tmp_path, "PHL-DFA", "PHL", {"JPN-ISA": ["status_notice"]})
    await pin_all([jpn, phl])
    yield jpn, phl
    await jpn.stop()
    await phl.stop()


@pytest.fixture
async def ops(pair):
    jpn, _ = pair
    b = browser(jpn)
    async with b.session:
        await b.sign_in(await token(jpn, "operator", "ops-desk"))
        yield b


def leaves_of(node, kind):
    return [leaf.record for leaf in node.audit.query(kind=kind, limit=1000)]


async def test_overview_shows_each_peers_queue_and_readiness(pair, ops):
    jpn, _ = pair
    status, page, _ = await ops.get("/console/overview")
    assert status == 200
    assert 'id="readiness">Ready' in page
    assert 'data-peer="PHL-DFA"' in page and "No alerts." in page


async def test_overview_shows_backlog_and_backoff_of_a_peer_that_is_down(pair, ops):
    jpn, phl = pair
    await phl.stop()
    await jpn.submit(fraud_notice(), ["PHL-DFA"], actor="test")
    await wait_for(lambda: jpn.outbox.workers["PHL-DFA"].backoff.attempt > 0, what="backoff")
    status, page, _ = await ops.get("/console/overview")
    assert status == 200
    row = page[page.index('data-peer="PHL-DFA"') :].split("</tr>")[0]
    assert "backoff (" in row and '<td class="n backlog">1</td>' in row
    assert "nothing answered at the peer" in row  # the error in words
    assert "PHL-DFA is in backoff after" in page  # and an alert
    status, page, _ = await ops.get("/console/peers/PHL-DFA")
    assert "in backoff after" in page and "ClientConnectorError" in page  # detail folded


async def test_pause_and_resume_are_stored_and_audited_with_the_token_name(pair, ops):
    jpn, _ = pair
    status, _, resp = await ops.post("/console/peers/PHL-DFA/pause")
    assert status == 303 and resp.headers["Location"].startswith("/console/peers/PHL-DFA?done=")
    assert jpn.store.get_peer("PHL-DFA").paused and jpn.directory.is_paused("PHL-DFA")
    status, page, _ = await ops.get("/console/overview")
    assert "delivery to PHL-DFA is paused by an operator" in page
    await ops.post("/console/peers/PHL-DFA/resume")
    assert not jpn.store.get_peer("PHL-DFA").paused
    assert [(x.kind, x.actor, x.peer) for x in leaves_of(jpn, "peer.paused")] == [
        ("peer.paused", "ops-desk", "PHL-DFA")
    ]
    assert [(x.actor, x.peer) for x in leaves_of(jpn, "peer.resumed")] == [("ops-desk", "PHL-DFA")]


async def test_ping_fetches_the_card_and_says_whether_it_matches(pair, ops):
    jpn, phl = pair
    status, _, resp = await ops.post("/console/peers/PHL-DFA/ping")
    status, page, _ = await ops.get(resp.headers["Location"])
    assert "PHL-DFA answered; its card matches the pinned one" in page
    await phl.stop()
    status, _, resp = await ops.post("/console/peers/PHL-DFA/ping")
    status, page, _ = await ops.get(resp.headers["Location"])
    assert "PHL-DFA did not answer: nothing answered at the peer" in page
    assert [(x.actor, x.attrs["outcome"]) for x in leaves_of(jpn, "peer.pinged")] == [
        ("ops-desk", "matches"), ("ops-desk", "unreachable"),
    ]  # fmt: skip


async def _pin(ops, card: bytes, fingerprint: str):
    data = aiohttp.FormData()
    data.add_field("csrf", ops.csrf)
    data.add_field("card", card, filename="card.pb", content_type="application/octet-stream")
    data.add_field("fingerprint", fingerprint)
    data.add_field("allow_fraud_notice", "on")
    return await ops.post("/console/peers", data)


async def test_pinning_needs_the_fingerprint_and_a_wrong_one_is_not_revealed(pair, ops, tmp_path):
    jpn, _ = pair
    tha = await make_node(tmp_path, "THA-IMM", "THA")
    try:
        card, right = tha.keys.card_bytes, tha.keys.fingerprint
        wrong = right[:-4] + ("AAAA" if not right.endswith("AAAA") else "BBBB")
        status, page, _ = await _pin(ops, card, wrong)
        assert status == 422 and "nothing was pinned" in page
        assert right not in page and right.replace("-", "") not in page
        assert jpn.store.get_peer("THA-IMM") is None
        (refusal,) = leaves_of(jpn, "request.refused")
        assert (refusal.actor, refusal.reason) == ("ops-desk", "fingerprint_mismatch")
        # Typed in lower case with spaces, as read on the phone.
        status, _, resp = await _pin(ops, card, right.lower().replace("-", " "))
        assert status == 303
        pinned = jpn.store.get_peer("THA-IMM")
        assert pinned.card == card and pinned.policy == ("fraud_notice",)
        assert "THA-IMM" in jpn.keyring.peers
        (added,) = leaves_of(jpn, "peer.added")
        assert (added.actor, added.peer) == ("ops-desk", "THA-IMM")
    finally:
        await tha.stop()


async def _dead_letter(jpn) -> int:
    [sub] = await jpn.submit(fraud_notice(), ["PHL-DFA"], actor="test")
    await wait_for(
        lambda: jpn.store.message_status(sub.message_id)[0].state is OutboxState.DEAD,
        what="a dead letter",
    )
    return jpn.store.message_status(sub.message_id)[0].outbox_id


async def test_a_dead_letter_acknowledged_stays_as_evidence_and_clears_the_alert(pair, ops):
    jpn, _ = pair
    outbox_id = await _dead_letter(jpn)
    status, page, _ = await ops.get("/console/overview")
    assert "1 dead letter(s) wait for a person" in page
    status, page, _ = await ops.get("/console/dead-letters")
    assert f'data-id="{outbox_id}"' in page and "policy_denied" in page
    status, _, resp = await ops.post(f"/console/dead-letters/{outbox_id}/acknowledge")
    assert status == 303
    assert jpn.store.queue_stats()[0].dead == 0
    assert jpn.store.dead_letters() == []  # the API's and `status`'s list
    assert jpn.store.get_outbox(outbox_id).state is OutboxState.DEAD  # kept
    status, page, _ = await ops.get("/console/overview")
    assert "No alerts." in page
    status, page, _ = await ops.get("/console/dead-letters")
    assert "No dead letters waiting for a person" in page
    status, page, _ = await ops.get("/console/dead-letters?all=1")
    assert "acknowledged by ops-desk" in page
    (leaf,) = leaves_of(jpn, "dead_letter.acknowledged")
    assert (leaf.actor, leaf.peer, leaf.attrs["outbox_id"]) == (
        "ops-desk",
        "PHL-DFA",
        str(outbox_id),
    )
    # Twice is refused, in words.
    status, page, _ = await ops.post(f"/console/dead-letters/{outbox_id}/acknowledge")
    assert status == 409 and "already acknowledged" in page


async def test_a_dead_letter_retried_is_queued_again_and_audited(pair, ops):
    jpn, phl = pair
    outbox_id = await _dead_letter(jpn)
    # The peer's operator allows the kind now; the retry then gets it delivered.
    await phl.directory.set_policy("JPN-ISA", ["status_notice", "fraud_notice"])
    assert jpn.store.get_outbox(outbox_id).reason == "policy_denied"
    status, _, _ = await ops.post(f"/console/dead-letters/{outbox_id}/retry")
    assert status == 303
    await wait_for(
        lambda: jpn.store.get_outbox(outbox_id).state is OutboxState.DELIVERED, what="delivery"
    )
    (leaf,) = leaves_of(jpn, "dead_letter.retried")
    assert (leaf.actor, leaf.peer, leaf.attrs["outbox_id"]) == (
        "ops-desk",
        "PHL-DFA",
        str(outbox_id),
    )


async def test_a_token_created_shows_its_secret_once_and_can_be_revoked(pair, ops):
    jpn, _ = pair
    status, page, _ = await ops.post("/console/tokens", {"name": "narita-gate", "role": "auditor"})
    assert status == 201
    secret = page.split('<code id="secret">')[1].split("</code>")[0]
    created = next(t for t in jpn.store.list_tokens() if t.name == "narita-gate")
    assert created.role == "auditor"
    from exchange_node.store.sqlite import hash_token_secret

    assert created.secret_hash == hash_token_secret(secret)
    status, page, _ = await ops.get("/console/tokens")
    assert secret not in page and "narita-gate" in page
    (leaf,) = leaves_of(jpn, "token.created")
    assert (leaf.actor, leaf.attrs["token"], leaf.attrs["role"]) == (
        "ops-desk",
        "narita-gate",
        "auditor",
    )
    status, _, _ = await ops.post(f"/console/tokens/{created.id}/revoke")
    assert status == 303
    assert all(t.name != "narita-gate" for t in jpn.store.list_tokens())
    (leaf,) = leaves_of(jpn, "token.revoked")
    assert (leaf.actor, leaf.attrs["token"]) == ("ops-desk", "narita-gate")


async def test_a_bad_token_name_is_refused_in_words_and_nothing_is_created(pair, ops):
    jpn, _ = pair
    before = jpn.store.list_tokens()
    status, page, _ = await ops.post("/console/tokens", {"name": "two words", "role": "auditor"})
    assert status == 422 and "name: use 1-64 of" in page
    assert jpn.store.list_tokens() == before and not leaves_of(jpn, "token.created")
    csrf_of(page)


async def test_keys_rotate_needs_the_node_id_and_announces_the_new_card(pair, ops):
    jpn, phl = pair
    serial = jpn.keys.card.serial
    status, page, _ = await ops.post("/console/keys/rotate", {"confirm": "yes"})
    assert status == 422 and "type this node&#39;s id (JPN-ISA)" in page
    assert jpn.keys.card.serial == serial and not leaves_of(jpn, "key.rotated")
    status, _, resp = await ops.post("/console/keys/rotate", {"confirm": "JPN-ISA"})
    assert status == 303
    await wait_for(lambda: jpn.keys.card.serial == serial + 1, what="the node's new card")
    await wait_for(lambda: phl.keyring.get("JPN-ISA").serial == serial + 1, what="the peer's copy")
    (leaf,) = [x for x in leaves_of(jpn, "key.rotated") if x.peer == ""]
    assert (leaf.actor, leaf.attrs["serial"]) == ("ops-desk", str(serial + 1))


async def test_overview_shows_each_catch_up_with_its_progress_and_time_left(pair, ops):
    jpn, phl = pair
    # Pinning caught PHL-DFA up at once: JPN-ISA had no notices of its own yet.
    await wait_for(lambda: jpn.store.catchup("PHL-DFA").state == "done", what="the catch-up")
    status, page, _ = await ops.get("/console/overview")
    assert status == 200
    row = page[page.index('<table id="catchups">') :].split("</table>")[0]
    row = row[row.index('data-peer="PHL-DFA"') :].split("</tr>")[0]
    assert '<span class="tag ok">done</span>' in row
    assert '<td class="n remaining">0</td>' in row and '<td class="eta">—</td>' in row

    # PHL-DFA goes down with a notice of JPN-ISA's on its way; the operator restarts
    # the catch-up (now of that notice) and pauses it.
    await phl.stop()
    document = notice_pb2.DocumentRef(
        issuing_state="JPN", document_type="P", document_number="TR1234567"
    )
    draft = NoticeDraft(kind=NoticeKind.STOLEN, document=document)
    await jpn.services.notices.submit(draft, ["PHL-DFA"], actor="test")
    kinds = wanted_kinds(jpn.store.get_peer("PHL-DFA").policy or jpn.config.policy_for("PHL-DFA"))
    now = jpn.now_ms()

    def restart_paused(tx):
        begin(tx, "PHL-DFA", jpn.node_id, kinds, kinds, now)
        return tx.set_catchup_state("PHL-DFA", "paused", now)

    await jpn.store.transaction(restart_paused, label="catchup.restart")
    _, page, _ = await ops.get("/console/overview")
    row = page[page.index('<table id="catchups">') :].split("</table>")[0]
    assert '<span class="tag warning">paused</span>' in row
    assert '<td class="n remaining">1</td>' in row and '<td class="eta">paused</td>' in row


async def test_the_operator_pauses_resumes_and_restarts_a_catch_up_from_the_overview(pair, ops):
    jpn, phl = pair
    await wait_for(
        lambda: getattr(jpn.store.catchup("PHL-DFA"), "state", "") == "done", what="the catch-up"
    )
    # A finished catch-up cannot be paused: refused with a sentence, audited, unchanged.
    status, page, _ = await ops.post("/console/peers/PHL-DFA/catchup/pause")
    assert status == 409 and "has finished; restart it instead" in page
    assert jpn.store.catchup("PHL-DFA").state == "done"
    assert [
        (x.actor, x.attrs["operation"], x.reason) for x in leaves_of(jpn, "request.refused")
    ] == [("ops-desk", "console.catchup_pause", "catchup_done")]

    # PHL-DFA is down and JPN-ISA has more notices in effect than two chunks: restarted,
    # the catch-up queues two and waits for the peer, running.
    await phl.stop()
    drafts = [
        (NoticeDraft(kind=NoticeKind.STOLEN, document=_document(f"TR{i:07d}")), None)
        for i in range(2 * jpn.config.delivery.batch_size + 50)
    ]
    await jpn.services.notices.submit_many(drafts, actor="test")
    status, _, resp = await ops.post("/console/peers/PHL-DFA/catchup/restart")
    assert status == 303 and resp.headers["Location"].startswith("/console/overview?done=")
    row = jpn.store.catchup("PHL-DFA")
    assert (row.state, row.total) == ("running", len(drafts))
    _, page, _ = await ops.get(resp.headers["Location"])
    assert f"catch-up of PHL-DFA restarted: {len(drafts)} notice(s) in effect to send" in page
    assert _catchup_actions(page) == ["pause", "restart"]

    status, _, resp = await ops.post("/console/peers/PHL-DFA/catchup/pause")
    assert status == 303 and jpn.store.catchup("PHL-DFA").state == "paused"
    _, page, _ = await ops.get(resp.headers["Location"])
    assert "catch-up of PHL-DFA paused at " in page
    assert _catchup_actions(page) == ["resume", "restart"]
    await ops.post("/console/peers/PHL-DFA/catchup/resume")
    row = jpn.store.catchup("PHL-DFA")
    assert row.state == "running" and row.paused_at is None and row.paused_ms >= 0
    catchup = [(x.actor, x.attrs["action"]) for x in leaves_of(jpn, "peer.catchup")]
    assert catchup[-3:] == [
        ("ops-desk", "restarted"),
        ("ops-desk", "paused"),
        ("ops-desk", "resumed"),
    ]


def _document(number: str) -> notice_pb2.DocumentRef:
    return notice_pb2.DocumentRef(issuing_state="JPN", document_type="P", document_number=number)


def _catchup_actions(page: str) -> list[str]:
    """The actions offered in the overview's catch-up row of PHL-DFA."""
    row = page[page.index('<table id="catchups">') :].split("</table>")[0]
    row = row[row.index('data-peer="PHL-DFA"') :].split("</tr>")[0]
    prefix = 'action="/console/peers/PHL-DFA/catchup/'
    return [part.split('"')[0] for part in row.split(prefix)[1:]]
