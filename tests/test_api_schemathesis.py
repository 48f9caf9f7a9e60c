"""Property-based test of the local API against the OpenAPI document it serves.

A real node runs on loopback (with one pinned peer). For each tag of the document, schemathesis generates
requests for every operation of that tag (valid and invalid ones: its fuzzing phase),
sends them with a token of the tag's role, and checks that no answer is a server error
and that every answer matches the document: a declared status code, a declared content
type, and a body valid against the declared schema.

So that answers with data are checked too, not only refusals, the node first holds a
case, a notice, a sent message and audit entries, and part of the generated requests
name them (:func:`_seed`); the rest name whatever schemathesis makes up.

The inbox long-poll may legitimately hold a request for up to 60 s; the generated
``wait`` is capped at 1 s here (the test's requests, not the served document) so that
the long-poll path is exercised without the run waiting on it.

Skipped when schemathesis (dev extras) is not installed.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request

import aiohttp
import pytest
from test_api_support import Client, make_node, pin_all, token

st = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as hst  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

ROLE_OF_TAG = {
    "documents": "document_officer",
    "cases": "case_officer",
    "audit": "auditor",
    "operator": "operator",
}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
MAX_EXAMPLES = 25
LONGEST_WAIT = 1


def _cap_wait(case):
    """A generated long-poll longer than LONGEST_WAIT seconds waits LONGEST_WAIT."""
    query = case.query
    if isinstance(query, dict) and "wait" in query:
        try:
            asked = int(str(query["wait"]))
        except ValueError:
            return case
        if LONGEST_WAIT < asked <= 60:
            query["wait"] = LONGEST_WAIT
    return case


async def _seed(node, peer) -> dict[str, dict[str, dict[str, str]]]:
    """Put a case, a notice and a sent message on ``node``; by operation id, the path
    (and query) parameters that name them."""
    async with aiohttp.ClientSession() as session:
        cases = Client(session, node, await token(node, "case_officer", "seed-cases"))
        docs = Client(session, node, await token(node, "document_officer", "seed-docs"))
        status, opened = await cases.post(
            "/api/v1/cases", {"participants": [{"node_id": peer.node_id, "role": "ORIGIN_STATE"}]}
        )
        assert status == 201, opened
        status, notice = await docs.post(
            "/api/v1/notices",
            {
                "kind": "COUNTERFEIT",
                "document": {"issuing_state": "PHL", "document_number": "P1234567A"},
                "detection": {"place": "JPNRT", "detected_at_ms": 1_700_000_000_000},
            },
        )
        assert status == 202, notice
    ref = opened["case_ref"]
    return {
        "getCase": {"path_parameters": {"case_ref": ref}},
        "addCaseEvent": {"path_parameters": {"case_ref": ref}},
        "getDocument": {
            "path_parameters": {"state": "PHL", "number": "P1234567A"},
            "query": {"type": "P"},
        },
        "getMessage": {"path_parameters": {"message_id": notice["messages"][0]["message_id"]}},
        "auditProof": {"path_parameters": {"seq": "0"}, "query": {}},
    }


def _fuzz(
    document: dict,
    tag: str,
    base_url: str,
    secret: str,
    known: dict[str, dict[str, dict[str, str]]],
) -> list[str]:
    """Run every operation of ``tag``; the failures, one text each."""
    schema = st.openapi.from_dict(document).include(tag=tag)
    headers = {"Authorization": f"Bearer {secret}"}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, f"no operations tagged {tag}"
    for operation in operations:
        strategies = [
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        ]
        if operation.definition.raw.get("operationId") in known:
            fixed = known[operation.definition.raw["operationId"]]
            strategies.append(operation.as_strategy(GenerationMode.POSITIVE, **fixed))
        strategy = hst.one_of(*strategies).map(_cap_wait)

        @settings(
            max_examples=MAX_EXAMPLES,
            phases=[Phase.generate],
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case) -> None:
            case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=10)

        try:
            run()
        except Exception as exc:  # every operation is tried; all failures are reported
            failures.append(f"{operation.label}: {exc}")
    return failures


@pytest.mark.parametrize("tag", sorted(ROLE_OF_TAG))
async def test_no_server_errors_and_every_response_matches_the_served_schema(tmp_path, tag):
    node = await make_node(tmp_path, "JPN-ISA", "JPN")
    peer = await make_node(tmp_path, "PHL-DFA", "PHL")
    try:
        await pin_all([node, peer])
        known = await _seed(node, peer)
        base = f"http://127.0.0.1:{node.local_port}"
        secret = await token(node, ROLE_OF_TAG[tag], f"fuzz-{tag}")

        def fetch() -> dict:
            with urllib.request.urlopen(f"{base}/api/v1/openapi.json") as resp:
                return json.load(resp)

        document = await asyncio.to_thread(fetch)
        failures = await asyncio.to_thread(_fuzz, document, tag, base, secret, known)
        assert not failures, "\n\n".join(failures)
    finally:
        await node.stop()
        await peer.stop()
