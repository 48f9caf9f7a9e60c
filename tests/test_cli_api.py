"""``exchange-node lookup`` and ``exchange-node case``: console commands that call the
running node's local API (found through ``[local_api] listen`` in the config) with a
token, print readable results, and fail with one ``error: ...`` line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from test_api_support import Client, make_node, pin_all, token

from exchange_node.config import render_config
from exchange_node.node import Node
from tests.node_helpers import free_port, run_cli

DOC = {"issuing_state": "PHL", "document_number": "P1234567A", "document_type": "P"}


def write_config(node: Node, path: Path, port: int | None = None) -> Path:
    """A config file naming ``node``'s data and the port its local API really listens on."""
    path.write_text(
        render_config(
            node_id=node.node_id,
            country=node.config.node.country,
            display_name=node.node_id,
            public_endpoint=node.config.peer_api.public_endpoint,
            peer_listen=node.config.peer_api.listen,
            local_listen=f"127.0.0.1:{port or node.local_port}",
            allow_plain_http=True,
            data_dir=str(node.config.data_path),
        )
    )
    return path


@pytest.fixture
async def pair(tmp_path, monkeypatch):
    """JPN-ISA and PHL-DFA pinned to each other; PHL has reported its passport stolen.
    Yields the nodes and their config files; EXCHANGE_NODE_TOKEN is unset."""
    monkeypatch.delenv("EXCHANGE_NODE_TOKEN", raising=False)
    jpn = await make_node(tmp_path, "JPN-ISA", "JPN")
    phl = await make_node(tmp_path, "PHL-DFA", "PHL")
    await pin_all([jpn, phl])
    async with aiohttp.ClientSession() as session:
        officer = Client(session, phl, await token(phl, "document_officer", "setup"))
        status, body = await officer.post(
            "/api/v1/notices", {"kind": "STOLEN", "document": DOC, "recipients": "all"}
        )
        assert status == 202, body
    yield {
        "jpn": jpn,
        "phl": phl,
        "jpn_config": write_config(jpn, tmp_path / "jpn.toml"),
        "phl_config": write_config(phl, tmp_path / "phl.toml"),
        "notice_id": body["notice_id"],
    }
    await jpn.stop()
    await phl.stop()


async def cli(config: Path, *args: str) -> int:
    return await asyncio.to_thread(run_cli, ["--config", str(config), *args])


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


# --- lookup -----------------------------------------------------------------------------------


async def test_lookup_prints_the_status_its_source_and_the_history(pair, capsys, monkeypatch):
    monkeypatch.setenv("EXCHANGE_NODE_TOKEN", await token(pair["phl"], "document_officer"))
    code = await cli(pair["phl_config"], "lookup", "PHL", "P1234567A", "--type", "P")
    out = capsys.readouterr().out
    assert code == 0
    assert "PHL P1234567A (type P): STOLEN; sources: PHL-DFA" in out
    assert "from PHL-DFA" in out and pair["notice_id"][:12] in out and "in effect" in out


async def test_lookup_of_an_unknown_document_says_it_is_not_known(pair, capsys, monkeypatch):
    monkeypatch.setenv("EXCHANGE_NODE_TOKEN", await token(pair["phl"], "document_officer"))
    code = await cli(pair["phl_config"], "lookup", "PHL", "X0000000")
    assert code == 0
    assert capsys.readouterr().out.strip() == "PHL X0000000: not known to this node"


async def test_a_lookup_through_the_cli_is_audited_with_the_tokens_name(pair, capsys, monkeypatch):
    monkeypatch.setenv("EXCHANGE_NODE_TOKEN", await token(pair["phl"], "document_officer", "desk"))
    await cli(pair["phl_config"], "lookup", "PHL", "P1234567A")
    (leaf,) = pair["phl"].audit.query(kind="document.lookup")
    assert leaf.record.actor == "desk"


async def test_batch_lookup_prints_one_line_per_document(pair, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("EXCHANGE_NODE_TOKEN", await token(pair["phl"], "document_officer"))
    batch = tmp_path / "docs.txt"
    batch.write_text("# morning list\nPHL P1234567A P\n\nPHL X0000000   # not reported\n")
    code = await cli(pair["phl_config"], "lookup", "--batch", str(batch))
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out.splitlines() == [
        "PHL P1234567A P: STOLEN; sources: PHL-DFA",
        "PHL X0000000: not known",
    ]
    assert "2 looked up, 1 known" in captured.err


async def test_a_bad_document_in_a_batch_names_its_place_in_the_file(
    pair, capsys, monkeypatch, tmp_path
):
    monkeypatch.setenv("EXCHANGE_NODE_TOKEN", await token(pair["phl"], "document_officer"))
    batch = tmp_path / "docs.txt"
    batch.write_text("PHL P1234567A\n# the next one is a typo\nQQQ P1234567A\n")
    code = await cli(pair["phl_config"], "lookup", "--batch", str(batch))
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert line.startswith("error: invalid_state_code: 'QQQ' ")
    assert line.endswith(f"({batch}:3, field issuing_state)")


async def test_a_malformed_batch_line_is_refused_before_anything_is_sent(
    pair, capsys, monkeypatch, tmp_path
):
    monkeypatch.setenv("EXCHANGE_NODE_TOKEN", await token(pair["phl"], "document_officer"))
    batch = tmp_path / "docs.txt"
    batch.write_text("PHL P1234567A\nPHL\n")
    code = await cli(pair["phl_config"], "lookup", "--batch", str(batch))
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert line == f"error: {batch}:2: expected STATE NUMBER [TYPE], got 'PHL'"
    assert pair["phl"].audit.query(kind="document.lookup") == []


# --- tokens and failures ------------------------------------------------------------------------


async def test_the_token_is_read_from_the_variable_named_by_token_env(pair, capsys, monkeypatch):
    monkeypatch.setenv("DESK_TOKEN", await token(pair["phl"], "document_officer"))
    code = await cli(pair["phl_config"], "lookup", "PHL", "P1234567A", "--token-env", "DESK_TOKEN")
    assert code == 0
    assert "STOLEN" in capsys.readouterr().out


async def test_the_token_may_be_given_with_token(pair, capsys):
    secret = await token(pair["phl"], "document_officer")
    code = await cli(pair["phl_config"], "lookup", "PHL", "P1234567A", "--token", secret)
    assert code == 0
    assert "STOLEN" in capsys.readouterr().out


async def test_without_a_token_the_command_says_where_to_put_one(pair, capsys):
    code = await cli(pair["phl_config"], "lookup", "PHL", "P1234567A")
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert "EXCHANGE_NODE_TOKEN" in line and "--token" in line


async def test_an_unknown_token_is_one_error_line_with_the_problems_code(pair, capsys):
    code = await cli(pair["phl_config"], "lookup", "PHL", "P1", "--token", "xn_unknown-token")
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert line.startswith("error: token_invalid: ")
    assert "(field Authorization)" in line


async def test_a_token_of_another_role_is_refused_with_role_forbidden(pair, capsys):
    secret = await token(pair["phl"], "case_officer")
    code = await cli(pair["phl_config"], "lookup", "PHL", "P1234567A", "--token", secret)
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert line.startswith("error: role_forbidden: ") and "document_officer" in line


async def test_a_node_that_is_not_running_is_one_error_line(pair, capsys, tmp_path):
    config = write_config(pair["phl"], tmp_path / "nobody.toml", port=free_port())
    code = await cli(config, "lookup", "PHL", "P1234567A", "--token", "xn_whatever")
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert "cannot reach the node's local API" in line and "exchange-node serve" in line


# --- cases ------------------------------------------------------------------------------------


async def _open_case(pair, capsys, monkeypatch, tmp_path) -> str:
    monkeypatch.setenv("EXCHANGE_NODE_TOKEN", await token(pair["jpn"], "case_officer", "shelter"))
    personal = tmp_path / "person.json"
    personal.write_text('{"full_name": "Maria Santos", "nationality": "PHL"}')
    code = await cli(
        pair["jpn_config"], "case", "open",
        "--participant", "PHL-DFA:ORIGIN_STATE",
        "--personal-data", str(personal),
        "--note", "referred by shelter",
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("opened case JPN-") and "(REFERRED)" in out and "sent to PHL-DFA" in out
    return out.split()[2]


async def test_case_open_event_and_show_print_the_case_as_it_moves(
    pair, capsys, monkeypatch, tmp_path
):
    ref = await _open_case(pair, capsys, monkeypatch, tmp_path)
    code = await cli(pair["jpn_config"], "case", "event", ref, "record_consent", "--note", "ok")
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith(f"case {ref} step 2: now CONSENT_RECORDED; sent to PHL-DFA")

    code = await cli(pair["jpn_config"], "case", "show", ref, "--purpose", "case_management")
    out = capsys.readouterr().out
    assert code == 0
    assert f"case {ref}: CONSENT_RECORDED, consent recorded" in out
    assert "participants: JPN-ISA (IDENTIFYING_STATE), PHL-DFA (ORIGIN_STATE)" in out
    assert "full_name=Maria Santos" in out
    assert "open_case" in out and "record_consent" in out and "note: referred by shelter" in out


async def test_an_illegal_case_step_is_one_error_line_with_its_code(
    pair, capsys, monkeypatch, tmp_path
):
    ref = await _open_case(pair, capsys, monkeypatch, tmp_path)
    code = await cli(pair["jpn_config"], "case", "event", ref, "depart")
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert line.startswith("error: illegal_transition: cannot depart while the case is REFERRED")
    assert line.endswith("(field event)")


async def test_case_show_of_an_unknown_case_names_the_field(pair, capsys, monkeypatch):
    monkeypatch.setenv("EXCHANGE_NODE_TOKEN", await token(pair["jpn"], "case_officer"))
    code = await cli(
        pair["jpn_config"], "case", "show", "JPN-2026-AAAAAAAA", "--purpose", "oversight"
    )
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert line.startswith("error: case_not_found: ") and line.endswith("(field case_ref)")


async def test_a_malformed_participant_is_refused_before_anything_is_sent(pair, capsys):
    code = await cli(
        pair["jpn_config"], "case", "open", "--participant", "PHL-DFA", "--token", "xn_x"
    )
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert line.startswith("error: --participant: expected NODE_ID:ROLE")


async def test_lookup_takes_a_document_or_a_batch_file_not_both(pair, capsys, tmp_path):
    batch = tmp_path / "docs.txt"
    batch.write_text("PHL P1234567A\n")
    code = await cli(
        pair["phl_config"], "lookup", "PHL", "P1", "--batch", str(batch), "--token", "xn_x"
    )
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert line.startswith("error: --batch: give either a file or STATE NUMBER")


# --- --json -----------------------------------------------------------------------------------


async def test_lookup_json_is_the_apis_answer(pair, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("EXCHANGE_NODE_TOKEN", await token(pair["phl"], "document_officer"))
    code = await cli(pair["phl_config"], "lookup", "PHL", "P1234567A", "--json")
    assert code == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["known"] is True
    (record,) = answer["records"]
    assert (record["status"], record["sources"]) == ("STOLEN", ["PHL-DFA"])
    assert record["history"][0]["notice"]["notice_id"] == pair["notice_id"]

    batch = tmp_path / "docs.txt"
    batch.write_text("PHL P1234567A P\nPHL X0000000\n")
    code = await cli(pair["phl_config"], "lookup", "--batch", str(batch), "--json")
    assert code == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [r["known"] for r in results] == [True, False]


async def test_case_show_json_is_the_apis_answer(pair, capsys, monkeypatch, tmp_path):
    ref = await _open_case(pair, capsys, monkeypatch, tmp_path)
    code = await cli(
        pair["jpn_config"], "case", "show", ref, "--json", "--purpose", "case_management"
    )
    assert code == 0
    case = json.loads(capsys.readouterr().out)
    assert (case["case_ref"], case["status"], case["my_role"]) == (
        ref, "REFERRED", "IDENTIFYING_STATE")  # fmt: skip
    assert [e["type"] for e in case["timeline"]] == ["open_case"]
