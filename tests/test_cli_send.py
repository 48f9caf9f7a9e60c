"""`exchange-node send` applies the same rules as the local API before anything is queued."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.node_helpers import make_net, run_cli

pytestmark = pytest.mark.usefixtures("node_store_backend")

JPN, PHL = "JPN-ISA", "PHL-DFA"

STOLEN_PHL_PASSPORT = {
    "statusNotice": {
        "document": {"issuingState": "PHL", "documentType": "P", "documentNumber": "P1234567"},
        "status": "DOCUMENT_STATUS_STOLEN",
        "effectiveAtMs": "1790000000000",
    }
}


@pytest.fixture
async def net(tmp_path):
    net = await make_net(tmp_path, [JPN, PHL])
    yield net
    await net.stop_all()


async def send(net, node_id: str, body: dict, tmp_path) -> int:
    path = tmp_path / "notice.json"
    path.write_text(json.dumps(body))
    args = ["--config", str(net[node_id].config_path), "send", str(path), "--all"]
    return await asyncio.to_thread(run_cli, args)


async def test_a_status_notice_for_another_states_document_is_refused(net, tmp_path, capsys):
    assert await send(net, JPN, STOLEN_PHL_PASSPORT, tmp_path) == 2
    assert "not_issuing_state" in capsys.readouterr().err
    jpn = await net[JPN].open()
    assert jpn.store.queue_stats() == [] or all(q.depth == 0 for q in jpn.store.queue_stats())
    assert jpn.services.index.count() == 0


async def test_the_issuing_state_sends_it_and_indexes_it_for_lookups(net, tmp_path, capsys):
    assert await send(net, PHL, STOLEN_PHL_PASSPORT, tmp_path) == 0
    out = capsys.readouterr().out
    assert "queued status_notice for JPN-ISA" in out
    phl = await net[PHL].open()
    [record] = phl.services.index.lookup("PHL", "P1234567", "P").records
    assert str(record[0].status.kind) == "STOLEN"
    # The notice id is printed, for a later correction or withdrawal of it.
    assert out.startswith(f"notice {record[0].status.notice_id} (STOLEN)\n")
