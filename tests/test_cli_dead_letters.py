"""Dead letters from the command line: listed with an id, retried once the cause is
fixed (and then delivered by the running node), or acknowledged so that status, the
metric and the list no longer count them; each action one audit leaf naming the OS user."""

from __future__ import annotations

import asyncio
import json
import os
import pwd

import pytest

from exchange_node.store.records import OutboxState
from tests.node_helpers import fraud_notice, make_net, run_cli, settled, wait_for

JPN, PHL = "JPN-ISA", "PHL-DFA"


@pytest.fixture
async def net(tmp_path):
    net = await make_net(tmp_path, [JPN, PHL])
    yield net
    await net.stop_all()


async def refused(net) -> tuple:
    """JPN's fraud notice refused by PHL (policy): one dead letter at JPN."""
    phl = await net[PHL].start()
    await phl.directory.set_policy(JPN, ["status_notice", "correction"])
    jpn = await net[JPN].start()
    [sub] = await jpn.submit(fraud_notice(), [PHL])
    await wait_for(lambda: settled(jpn.store, [sub.message_id]), what="a final outcome")
    [row] = jpn.store.message_status(sub.message_id)
    assert row.state is OutboxState.DEAD
    return jpn, phl, sub.message_id, row.outbox_id


async def cli(net, capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()  # the running nodes' logs so far
    code = await asyncio.to_thread(run_cli, ["--config", str(net[JPN].config_path), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_a_dead_letter_retried_after_the_cause_is_fixed_is_delivered(net, capsys):
    jpn, phl, message_id, outbox_id = await refused(net)
    code, out, _ = await cli(net, capsys, "dead-letters", "list", "--json")
    assert code == 0
    (listed,) = json.loads(out)["dead_letters"]
    assert listed == {
        "id": outbox_id, "peer": PHL, "message_id": message_id.hex(),
        "reason": "policy_denied", "queued_at": listed["queued_at"],
        "attempts": listed["attempts"], "acknowledged": False,
    }  # fmt: skip

    await phl.directory.set_policy(JPN, ["status_notice", "fraud_notice", "correction"])
    code, out, _ = await cli(net, capsys, "dead-letters", "retry", str(outbox_id))
    assert code == 0
    assert f"dead letter {outbox_id} queued again for {PHL} (message {message_id.hex()})\n" in out

    await wait_for(
        lambda: jpn.store.message_status(message_id)[0].state is OutboxState.DELIVERED,
        what="delivery of the retried dead letter",
    )
    assert phl.store.get_inbox(JPN, message_id) is not None
    (leaf,) = jpn.audit.query(kind="dead_letter.retried")
    assert leaf.record.actor == f"operator:{pwd.getpwuid(os.getuid()).pw_name}"
    assert (leaf.record.peer, leaf.record.message_id) == (PHL, message_id.hex())
    assert (leaf.record.reason, leaf.record.attrs) == (
        "policy_denied",
        {"outbox_id": str(outbox_id)},
    )


async def test_an_acknowledged_dead_letter_no_longer_counts(net, capsys):
    jpn, _, message_id, outbox_id = await refused(net)
    jpn.update_gauges()
    assert jpn.metrics.dead.labels(PHL)._value.get() == 1

    code, out, _ = await cli(net, capsys, "dead-letters", "acknowledge", f"#{outbox_id}")
    assert code == 0 and out.startswith(f"dead letter {outbox_id} acknowledged, to {PHL}")
    jpn.update_gauges()
    assert jpn.metrics.dead.labels(PHL)._value.get() == 0
    assert jpn.store.dead_letters() == []
    [row] = jpn.store.message_status(message_id)
    assert row.state is OutboxState.DEAD  # kept as evidence of the refusal
    code, out, _ = await cli(net, capsys, "status")
    assert "dead letters" not in out
    code, out, _ = await cli(net, capsys, "dead-letters", "list", "--all")
    assert f"{outbox_id:>6} {PHL}" in out and out.rstrip().endswith("(acknowledged)")
    (leaf,) = jpn.audit.query(kind="dead_letter.acknowledged")
    assert leaf.record.actor == f"operator:{pwd.getpwuid(os.getuid()).pw_name}"

    code, _, err = await cli(net, capsys, "dead-letters", "acknowledge", str(outbox_id))
    assert code == 2
    assert err.startswith("error: dead_letter_already_acknowledged: ")
    assert len(jpn.audit.query(kind="dead_letter.acknowledged")) == 1


async def test_retrying_something_that_is_not_a_dead_letter_is_one_error_line(net, capsys):
    code, _, err = await cli(net, capsys, "dead-letters", "retry", "999")
    assert (code, err) == (2, "error: outbox_id_unknown: no outbox row 999 (field outbox_id)\n")
    code, _, err = await cli(net, capsys, "dead-letters", "retry", "abc")
    assert code == 2 and err.startswith("error: dead_letter_id_invalid: ")
