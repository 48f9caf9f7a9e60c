"""``exchange-node demo``: three real nodes on loopback play a short scenario.

A destination state (JPN-ISA), an origin state (PHL-DFA) and IOM (IOM-MNL) are created
with fresh identities in a temporary directory, exchange and pin each other's cards,
and run as separate ``exchange-node serve`` processes talking mutual TLS. Then:

1. Immigration at Narita detects a counterfeit Philippine passport; its border system
   submits a fraud detection through the node's local API; signed receipts come back.
2. The issuing state's system reads the notice from its inbox feed and publishes a
   REVOKED status notice; a later lookup at JPN answers REVOKED with the history.
3. IOM's node goes down; notices queue for it; it comes back and receives them all,
   in order, without anyone doing anything.
4. A repatriation case, driven by each authority's case system through its own node's
   local API: JPN opens it naming PHL and IOM, records consent; IOM records the
   assessment; PHL accepts the return; IOM requests and PHL issues the travel document.
   All three nodes show the same state and timeline, every step with signed receipts.
5. A second case in which consent is withdrawn after PHL accepted: a travel step is
   refused on each node's local API (409 ``illegal_transition``) and every node shows
   the case stopped.
6. While JPN's border system keeps submitting notices to PHL and IOM, JPN's operator
   rotates its keys with ``keys rotate``: every notice, signed with the old key or the
   new one, is delivered with a signed receipt, and both peers now pin JPN's new card.
7. A court asks for proof that the Narita notice reached PHL: ``proof export`` writes
   one file; ``proof verify`` checks it offline and succeeds with PHL's card
   fingerprint (the recipient's, obtained out of band) and fails with another.
8. The lookup is in JPN's audit log (who, and a keyed hash of what); every node's
   audit log verifies.

The demo prints a timeline and exits 0 only if every check held.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from cryptography.exceptions import InvalidSignature

from exchange_node.pb.exchange.v1 import envelope_pb2
from exchange_node.protocol.cards import verify_card
from exchange_node.protocol.framing import LABEL_RECEIPT_SIGNATURE, frame
from exchange_node.protocol.keys import ed25519_public_key
from exchange_node.store.records import OutboxState
from exchange_node.store.sqlite import SqliteStore

PASSPORT = {"issuing_state": "PHL", "document_type": "P", "document_number": "P4366918B"}

NODES = (
    ("JPN-ISA", "JPN", "Immigration Services Agency of Japan", "destination state"),
    ("PHL-DFA", "PHL", "Department of Foreign Affairs, Philippines", "origin state"),
    ("IOM-MNL", "UNO", "IOM Manila", "international organisation"),
)


@dataclass
class DemoNode:
    node_id: str
    country: str
    name: str
    role: str
    dir: Path
    peer_port: int
    local_port: int
    proc: subprocess.Popen | None = None
    fingerprint: str = ""

    @property
    def config(self) -> Path:
        return self.dir / "node.toml"

    @property
    def card(self) -> Path:
        return self.dir / "data" / "card.pb"


@dataclass
class Demo:
    work: Path
    nodes: dict[str, DemoNode] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    checks: list[tuple[bool, str]] = field(default_factory=list)
    parts: int = 0
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)  # (node id, role)
    now_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    def part(self, text: str) -> None:
        self.parts += 1
        self.say(f"{self.parts}. {text}")

    def check(self, ok: bool, text: str) -> bool:
        self.checks.append((ok, text))
        print(f"          {'PASS' if ok else 'FAIL'}  {text}", flush=True)
        return ok

    def run_cli(self, node: DemoNode | None, *args: str) -> subprocess.CompletedProcess:
        """``exchange-node [--config node] args``, whatever its exit status."""
        config = ["--config", str(node.config)] if node is not None else []
        cmd = [sys.executable, "-m", "exchange_node.cli", *config, *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    def cli(self, node: DemoNode, *args: str) -> str:
        res = self.run_cli(node, *args)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {res.stderr.strip()}")
        return res.stdout

    def create_tokens(self, wanted: list[tuple[DemoNode, str, str]]) -> None:
        """``token create`` for each (node, role, name), the commands run side by side."""
        with ThreadPoolExecutor(len(wanted)) as pool:
            made = {
                (n.node_id, role): pool.submit(
                    self.cli, n, "token", "create", "--role", role, "--name", name
                )
                for n, role, name in wanted
            }
        self.tokens.update({key: future.result().strip() for key, future in made.items()})

    # --- set-up -------------------------------------------------------------------

    def create(self) -> None:
        for node_id, country, name, role in NODES:
            d = self.work / node_id.lower()
            n = DemoNode(node_id, country, name, role, d, _free_port(), _free_port())
            self.nodes[node_id] = n
            out = self.cli(
                n,
                "init",
                "--node-id", node_id,
                "--country", country,
                "--display-name", name,
                "--endpoint", f"https://127.0.0.1:{n.peer_port}",
                "--peer-listen", f"127.0.0.1:{n.peer_port}",
                "--local-listen", f"127.0.0.1:{n.local_port}",
            )  # fmt: skip
            n.fingerprint = re.search(r"fingerprint: (\S+)", out).group(1)  # type: ignore[union-attr]
            self.say(f"{node_id:<8} {name} ({role}); fingerprint {n.fingerprint}")

    def pin_all(self) -> None:
        pins = 0
        for a in self.nodes.values():
            for b in self.nodes.values():
                if a is not b:
                    # The operator of `a` received b's card by official channel and
                    # compared the fingerprint by phone.
                    self.cli(a, "peer", "add", str(b.card), "--fingerprint", b.fingerprint)
                    pins += 1
        self.say(f"cards exchanged; fingerprints compared out of band; {pins} pins made")
        wrong = self.nodes["PHL-DFA"]
        try:
            self.cli(
                self.nodes["JPN-ISA"],
                "peer",
                "add",
                str(wrong.card),
                "--fingerprint",
                "AAAA-" + wrong.fingerprint[5:],
            )
            refused = False
        except RuntimeError as exc:
            refused = "mismatch" in str(exc)
        self.check(
            refused, "a card offered with a wrong fingerprint is refused and nothing is pinned"
        )

    def start(self, node: DemoNode) -> None:
        ready = node.dir / "ready.json"
        ready.unlink(missing_ok=True)
        log = open(node.dir / "node.log", "ab")  # noqa: SIM115 - kept open for the child
        node.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exchange_node.cli",
                "--config",
                str(node.config),
                "serve",
                "--ready-file",
                str(ready),
            ],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 30
        while not ready.exists():
            if node.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{node.node_id} did not start; see {node.dir / 'node.log'}")
            time.sleep(0.05)

    def stop(self, node: DemoNode) -> None:
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGTERM)
            try:
                node.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()
        node.proc = None

    # --- actions --------------------------------------------------------------------

    def send(self, sender: DemoNode, body: dict, to: list[str] | None) -> dict[str, str]:
        path = self.work / f"notice-{time.monotonic_ns()}.json"
        path.write_text(json.dumps(body))
        args = ["send", str(path)] + (
            ["--all"] if to is None else [a for t in to for a in ("--to", t)]
        )
        out = self.cli(sender, *args)
        return dict(re.findall(r"for (\S+): message ([0-9a-f]{32})", out))

    async def wait_delivered(
        self, sender: DemoNode, messages: dict[str, str], timeout: float = 30
    ) -> dict:
        async with _store(sender) as store:
            deadline = time.monotonic() + timeout
            while True:
                rows = {p: store.message_status(bytes.fromhex(m)) for p, m in messages.items()}
                done = all(r and r[0].state is not OutboxState.QUEUED for r in rows.values())
                if done or time.monotonic() > deadline:
                    receipts = {
                        p: store.get_receipt(r[0].receipt_id) if r and r[0].receipt_id else None
                        for p, r in rows.items()
                    }
                    return {p: (rows[p][0] if rows[p] else None, receipts[p]) for p in messages}
                await asyncio.sleep(0.1)

    def report_delivery(self, sender: DemoNode, delivered: dict) -> bool:
        ok = True
        for peer, (row, receipt) in delivered.items():
            good = _accepted(row) and receipt
            if good:
                valid = _receipt_signed_by(receipt.receipt, self.nodes[peer])
                self.say(
                    f"  {peer} accepted message {row.message_id.hex()[:12]}..: signed receipt "
                    f"{'verified' if valid else 'INVALID'} ({len(receipt.receipt)} bytes)"
                )
                good = valid
            else:
                self.say(
                    f"  {peer}: {row.state.value if row else 'unknown'} {row.reason if row else ''}"
                )
            ok = ok and bool(good)
        return ok

    def verified(self, delivered: dict) -> int:
        """How many of ``delivered`` were accepted with a receipt signed by the recipient."""
        return sum(
            _accepted(row)
            and receipt is not None
            and _receipt_signed_by(receipt.receipt, self.nodes[row.peer_id])
            for row, receipt in delivered.values()
        )

    async def api(
        self, node: DemoNode, token: str, method: str, path: str, body, quiet: bool = False
    ) -> tuple[int, dict]:
        """Call a node's local API as an authority system would."""
        url = f"http://127.0.0.1:{node.local_port}{path}"
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.request(method, url, json=body, headers=headers) as resp,
        ):
            answer = await resp.json(content_type=None)
        if resp.status >= 400 and not quiet:
            self.say(
                f"   {node.node_id} answered {resp.status}: {answer.get('code')}: {answer.get('detail')}"
            )
        return resp.status, answer

    async def inbox(self, node: DemoNode) -> list:
        async with _store(node) as store:
            return store.inbox_feed(0, 1000)

    # --- scenario ----------------------------------------------------------------------

    async def scenario(self) -> None:
        jpn, phl, iom = self.nodes["JPN-ISA"], self.nodes["PHL-DFA"], self.nodes["IOM-MNL"]
        self.create_tokens(
            [
                (jpn, "document_officer", "narita-border"),
                (phl, "document_officer", "dfa-passports"),
                (jpn, "case_officer", "isa-victim-protection"),
                (phl, "case_officer", "dfa-assistance-to-nationals"),
                (iom, "case_officer", "iom-mnl-case-worker"),
                (phl, "operator", "dfa-operations"),
                (iom, "operator", "iom-mnl-operations"),
            ]
        )
        self.say("   each authority's system got a token for its node's local API")
        fraud = await self.fraud_detection()
        await self.revocation_and_lookup(fraud)
        await self.outage()
        await self.repatriation()
        await self.consent_withdrawn()
        await self.key_rotation()
        await self.proof_of_delivery(fraud["PHL-DFA"])
        self.audit()

    async def fraud_detection(self) -> dict[str, str]:
        """A border system reports a counterfeit; both peers sign receipts. Returns the
        message id per recipient."""
        jpn = self.nodes["JPN-ISA"]
        self.part("Narita immigration detects a counterfeit Philippine passport P4366918B")
        status, answer = await self.api(
            jpn,
            self.tokens[jpn.node_id, "document_officer"],
            "POST",
            "/api/v1/notices",
            {
                "kind": "COUNTERFEIT",
                "document": PASSPORT,
                "detection": {
                    "place": "JPNRT",
                    "detected_at_ms": self.now_ms - 3_600_000,
                    "authority": "Immigration Services Agency, Narita Airport",
                },
                "remarks": "Data page substituted; laminate does not match specimen",
                "recipients": "all",
            },
        )
        msgs = {m["recipient"]: m["message_id"] for m in answer.get("messages", [])}
        self.say(f"   border system -> JPN-ISA local API: {status}, notice {answer.get('notice_id', '?')[:12]}.. "
                 f"queued for {', '.join(sorted(msgs))}")  # fmt: skip
        delivered = await self.wait_delivered(jpn, msgs)
        self.check(
            status == 202 and self.report_delivery(jpn, delivered),
            "fraud notice delivered to PHL-DFA and IOM-MNL with verified signed receipts",
        )
        return msgs

    async def revocation_and_lookup(self, fraud: dict[str, str]) -> None:
        """The issuing state finds the fraud notice (message ids ``fraud``) in its inbox
        feed and revokes the passport; a lookup at the border answers REVOKED with the
        history."""
        jpn, phl = self.nodes["JPN-ISA"], self.nodes["PHL-DFA"]
        phl_token = self.tokens[phl.node_id, "document_officer"]
        self.part("The issuing state's system reads its inbox feed and revokes the passport")
        status, feed = await self.api(phl, phl_token, "GET", "/api/v1/inbox?wait=5", None)
        seen = [i for i in feed.get("items", []) if i["message_id"] == fraud.get("PHL-DFA")]
        if seen and seen[0]["notice"]:
            n = seen[0]["notice"]
            self.say(f"   PHL-DFA inbox: {n['kind']} of {n['document']['issuing_state']} "
                     f"{n['document']['document_number']} from {n['sender_node']} at {n['detection']['place']}")  # fmt: skip
        self.check(len(seen) == 1, "the issuing state's inbox feed shows the fraud notice")
        status, answer = await self.api(
            phl,
            phl_token,
            "POST",
            "/api/v1/notices",
            {
                "kind": "REVOKED",
                "document": PASSPORT,
                "effective_at_ms": self.now_ms,
                "remarks": "Number belongs to a blank stolen in 2025; revoked",
                "recipients": "all",
            },
        )
        msgs = {m["recipient"]: m["message_id"] for m in answer.get("messages", [])}
        delivered = await self.wait_delivered(phl, msgs)
        self.check(
            status == 202 and self.report_delivery(phl, delivered),
            "REVOKED status notice delivered to JPN-ISA and IOM-MNL with signed receipts",
        )

        self.say(
            "   later the same passport is presented at Kansai; the border system asks JPN-ISA"
        )
        started = time.perf_counter()
        status, answer = await self.api(
            jpn,
            self.tokens[jpn.node_id, "document_officer"],
            "GET",
            "/api/v1/documents/PHL/P4366918B?type=P",
            None,
        )
        elapsed = (time.perf_counter() - started) * 1000
        record = (answer.get("records") or [{}])[0]
        kinds = [
            f"{h['notice']['kind']} by {h['notice']['sender_node']}"
            for h in record.get("history", [])
        ]
        self.say(
            f"   answer in {elapsed:.1f} ms: status {record.get('status')}; history: {'; '.join(kinds)}"
        )
        self.check(
            status == 200 and record.get("status") == "REVOKED" and len(kinds) == 2,
            "the lookup answers REVOKED by the issuing state, with the fraud detection in the history",
        )

    async def outage(self) -> None:
        """Story 10: a peer is down; notices queue for it and arrive, in order, after."""
        jpn, iom = self.nodes["JPN-ISA"], self.nodes["IOM-MNL"]
        self.part("IOM-MNL goes down for maintenance")
        self.stop(iom)
        queued = []
        for i in range(3):
            body = {
                "fraudNotice": {
                    "document": {
                        "issuingState": "PHL",
                        "documentType": "P",
                        "documentNumber": f"P77100{i:02d}C",
                    },
                    "fraudType": "FRAUD_TYPE_IMPOSTOR",
                    "detectedAtMs": str(self.now_ms - 60_000 * (3 - i)),
                    "detectionPlace": "JPNKIX",
                    "detectingAuthority": "Immigration Services Agency, Kansai",
                }
            }
            queued.append(self.send(jpn, body, ["IOM-MNL"])["IOM-MNL"])
        self.say(f"   JPN-ISA queued {len(queued)} notices for IOM-MNL while it is down")
        await asyncio.sleep(1.5)
        status_out = self.cli(jpn, "status")
        line = next((ln for ln in status_out.splitlines() if ln.startswith("IOM-MNL")), "")
        self.say(f"   operator's status: {' '.join(line.split()[:6])} ...")
        self.check(
            re.search(r"IOM-MNL\s+active\s+3\s", line) is not None,
            "status shows the backlog of 3 for IOM-MNL and its age",
        )

        self.say("   IOM-MNL comes back; nobody touches JPN-ISA")
        self.start(iom)
        delivered = await self.wait_delivered(
            jpn, {f"IOM-MNL#{i}": m for i, m in enumerate(queued)}, timeout=60
        )
        all_ok = all(
            row is not None and row.state is OutboxState.DELIVERED for row, _ in delivered.values()
        )
        inbox = [r.message_id.hex() for r in await self.inbox(iom) if r.sender == "JPN-ISA"]
        order = [m for m in inbox if m in queued]
        self.say(f"   IOM-MNL received {len(order)} of {len(queued)} queued notices")
        self.check(
            all_ok and order == queued,
            "after the outage every queued notice arrived, in order, exactly once",
        )

    async def repatriation(self) -> None:
        """Stories 5-8: a case across the three nodes, up to the travel document."""
        jpn, phl, iom = self.nodes["JPN-ISA"], self.nodes["PHL-DFA"], self.nodes["IOM-MNL"]
        self.part("A trafficking victim from the Philippines is identified in Tokyo")
        ref = await self.open_case(
            {"full_name": "Maria Santos", "nationality": "PHL", "sex": "F", "languages": "fil, en"},
            "referred by a shelter in Tokyo; wishes to return home",
        )
        if ref is None:
            return
        self.check(
            re.fullmatch(r"JPN-[0-9]{4}-[A-Z2-7]{8}", ref) is not None,
            f"the case reference {ref} is pseudonymous: state, year, random characters",
        )
        steps = [
            (jpn, "record_consent", "she consents to an assisted return; JPN-ISA records it"),
            (iom, "record_assessment", "IOM-MNL records the joint risk and family assessment"),
            (phl, "accept_return", "PHL-DFA accepts her return"),
            (iom, "request_travel_document", "IOM-MNL requests a travel document"),
            (phl, "issue_travel_document", "PHL-DFA issues it"),
        ]
        done = await self.case_steps(ref, steps)
        views = await self.case_views(ref, lambda n, v: _receipted(n, v, len(steps) + 1))
        self.say(f"   timeline on each node: {_timeline_text(views[jpn.node_id])}")
        self.check(
            done
            and _same_case(views)
            and views[jpn.node_id]["status"] == "TRAVEL_DOCUMENT_ISSUED"
            and len(views[jpn.node_id]["timeline"]) == len(steps) + 1,
            "JPN-ISA, PHL-DFA and IOM-MNL show the same case: TRAVEL_DOCUMENT_ISSUED, "
            f"the same {len(steps) + 1} steps by the same nodes at the same times",
        )
        self.check(
            all(_receipted(n, v, len(steps) + 1) for n, v in views.items()),
            "every node's own steps reached both other participants, each with a signed receipt",
        )
        self.check(
            (views[phl.node_id].get("personal_data") or {}).get("full_name") == "Maria Santos",
            "the origin state's node holds the personal data sent, sealed, with the case",
        )

    async def consent_withdrawn(self) -> None:
        """Stories 5-8 when consent is withdrawn after the origin state accepted: travel
        steps are refused on every node and the case is stopped everywhere."""
        jpn, phl, iom = self.nodes["JPN-ISA"], self.nodes["PHL-DFA"], self.nodes["IOM-MNL"]
        self.part("A second case: the person withdraws her consent before travel")
        ref = await self.open_case(
            {"nationality": "PHL", "sex": "F"}, "identified during a labour inspection in Osaka"
        )
        if ref is None:
            return
        steps = [
            (iom, "record_consent", "she consents; IOM-MNL records it"),
            (iom, "record_assessment", "IOM-MNL records the assessment"),
            (phl, "accept_return", "PHL-DFA accepts her return"),
            (iom, "withdraw_consent", "she changes her mind; IOM-MNL records the withdrawal"),
        ]
        done = await self.case_steps(ref, steps)
        refused = []
        for node, kind in (
            (jpn, "request_travel_document"),
            (phl, "issue_travel_document"),
            (iom, "plan_travel"),
        ):
            self.say(f"   {node.node_id}'s case system still tries to {kind}")
            status, problem = await self.case_api(node, "POST", f"/{ref}/events", {"type": kind})
            refused.append((status, problem.get("code")))
        self.check(
            done and set(refused) == {(409, "illegal_transition")},
            "each travel step is refused on the local API: 409 illegal_transition",
        )
        views = await self.case_views(ref, lambda n, v: _receipted(n, v, len(steps) + 1))
        self.check(
            _same_case(views)
            and all(
                v["status"] == "CONSENT_WITHDRAWN"
                and v["consent"] is False
                and v["allowed_events"] == []
                and len(v["timeline"]) == len(steps) + 1
                for v in views.values()
            ),
            "every participant shows the case stopped: CONSENT_WITHDRAWN, no step allowed, "
            "nothing recorded after the withdrawal",
        )

    async def case_api(self, node: DemoNode, method: str, path: str, body=None, **kw):
        """The node's cases API with its case officer's token."""
        token = self.tokens[node.node_id, "case_officer"]
        return await self.api(node, token, method, "/api/v1/cases" + path, body, **kw)

    async def open_case(self, personal: dict, note: str) -> str | None:
        """JPN-ISA opens a case with PHL-DFA and IOM-MNL; the reference once every
        participant holds it (None, after a failed check, if not)."""
        jpn = self.nodes["JPN-ISA"]
        body = {
            "participants": [
                {"node_id": "PHL-DFA", "role": "ORIGIN_STATE"},
                {"node_id": "IOM-MNL", "role": "IOM"},
            ],
            "personal_data": personal,
            "note": note,
        }
        status, answer = await self.case_api(jpn, "POST", "", body)
        ref = answer.get("case_ref")
        self.say(f"   JPN-ISA's case system opens case {ref} naming PHL-DFA (origin state) "
                 f"and IOM-MNL: {status} {answer.get('status')}")  # fmt: skip
        if status == 201 and await self.replicated(ref, 1):
            return ref
        self.check(False, "the case opening reached every participant")
        return None

    async def case_steps(self, ref: str, steps: list[tuple[DemoNode, str, str]]) -> bool:
        """Each step on its actor's local API, once every participant has the one before."""
        for node, kind, story in steps:
            status, answer = await self.case_api(node, "POST", f"/{ref}/events", {"type": kind})
            self.say(f"   {story}: {kind} -> {answer.get('status', status)}")
            if status != 202 or not await self.replicated(ref, answer["sequence"]):
                return self.check(False, f"{kind} by {node.node_id} reached every participant")
        return True

    async def replicated(self, ref: str, steps: int) -> bool:
        """Every participant shows at least ``steps`` steps of the case."""
        views = await self.case_views(ref, lambda _, v: len(v.get("timeline", ())) >= steps)
        return all(len(v.get("timeline", ())) >= steps for v in views.values())

    async def case_views(self, ref: str, until, timeout: float = 15) -> dict[str, dict]:
        """The case as each participant's local API shows it, by node id, once
        ``until(node_id, view)`` holds for all of them (or at the timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            views = {}
            for n in self.nodes.values():
                status, view = await self.case_api(
                    n, "GET", f"/{ref}?purpose=return_coordination", quiet=True
                )
                views[n.node_id] = view if status == 200 else {}
            if all(until(n, v) for n, v in views.items()) or time.monotonic() > deadline:
                return views
            await asyncio.sleep(0.05)

    async def key_rotation(self) -> None:
        """Story 11: JPN-ISA rotates its keys with the CLI while notices flow to both
        peers; every notice arrives, and the peers pin the new card on their own."""
        jpn = self.nodes["JPN-ISA"]
        peers = [self.nodes["PHL-DFA"], self.nodes["IOM-MNL"]]
        self.part("JPN-ISA's yearly key rotation, in the middle of traffic")
        old_key = _signing_key_id(jpn)
        sent: list[tuple[str, str]] = []  # (recipient, message id), in submission order
        stop = asyncio.Event()
        traffic = asyncio.create_task(self.submit_until(stop, jpn, peers, sent))
        await asyncio.sleep(0.5)
        out = await asyncio.to_thread(self.cli, jpn, "keys", "rotate")
        rotated = re.search(r"rotated keys: card serial (\d+), fingerprint (\S+)", out)
        self.say(
            f"   JPN-ISA's operator runs `keys rotate`: {rotated.group(0) if rotated else out}"
        )
        serial, fingerprint = (int(rotated.group(1)), rotated.group(2)) if rotated else (0, "")
        new_key = _signing_key_id(jpn)
        # The running node takes the new keys up within a second; keep the traffic going
        # until a few notices are out under the new signing key.
        await self.wait_signed_with(jpn, sent, new_key, 4)
        stop.set()
        await traffic
        signers = await self.signers(jpn, [m for _, m in sent])
        before = sum(signers.get(m) == old_key for _, m in sent)
        after = sum(signers.get(m) == new_key for _, m in sent)
        self.say(f"   {len(sent)} messages submitted ({len(sent) // len(peers)} notices to each peer): "
                 f"{before} signed with the old key, {after} with the new one")  # fmt: skip
        delivered = await self.wait_delivered(jpn, {m: m for _, m in sent})
        good = self.verified(delivered)
        self.say(f"   {good} of {len(sent)} accepted, each with a signed receipt that verifies")
        self.check(
            before > 0 and after > 0 and good == len(sent) == before + after,
            "every notice submitted before and after the rotation was delivered with a signed receipt",
        )
        pinned = {p.node_id: await self.pinned_card(p, jpn.node_id) for p in peers}
        for peer, (fp, sn) in pinned.items():
            self.say(f"   {peer} now pins JPN-ISA card serial {sn}, fingerprint {fp}")
        self.check(
            serial > 1 and all(v == (fingerprint, serial) for v in pinned.values()),
            f"PHL-DFA and IOM-MNL took up JPN-ISA's new card (serial {serial}) without a phone call",
        )

    async def submit_until(
        self, stop: asyncio.Event, sender: DemoNode, to: list[DemoNode], sent: list
    ) -> None:
        """A border system's steady traffic: a fraud detection every 0.1 s, through the
        local API, to ``to``; appends (recipient, message id) to ``sent``."""
        token = self.tokens[sender.node_id, "document_officer"]
        i = 0
        while not stop.is_set():
            body = {
                "kind": "IMPOSTOR",
                "document": {**PASSPORT, "document_number": f"P{5520000 + i}D"},
                "detection": {
                    "place": "JPNHND",
                    "detected_at_ms": self.now_ms + i,
                    "authority": "Immigration Services Agency, Haneda Airport",
                },
                "recipients": [n.node_id for n in to],
            }
            _, answer = await self.api(sender, token, "POST", "/api/v1/notices", body)
            sent += [(m["recipient"], m["message_id"]) for m in answer.get("messages", [])]
            i += 1
            await asyncio.sleep(0.1)

    async def wait_signed_with(
        self, sender: DemoNode, sent: list, key_id: bytes, count: int, timeout: float = 10
    ) -> None:
        """Until ``count`` of the messages in ``sent`` are signed with ``key_id``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            signers = await self.signers(sender, [m for _, m in sent])
            if sum(k == key_id for k in signers.values()) >= count:
                return
            await asyncio.sleep(0.2)

    async def signers(self, sender: DemoNode, message_ids: list[str]) -> dict[str, bytes]:
        """The signing key id on each message's envelope as queued at the sender."""
        out = {}
        async with _store(sender) as store:
            for mid in message_ids:
                rows = store.message_status(bytes.fromhex(mid))
                row = store.get_outbox(rows[0].outbox_id) if rows else None
                if row is not None:
                    envelope = envelope_pb2.Envelope.FromString(row.envelope)
                    header = envelope_pb2.EnvelopeHeader.FromString(envelope.header)
                    out[mid] = header.sender_key_id
        return out

    async def pinned_card(self, node: DemoNode, peer: str) -> tuple[str, int]:
        """(fingerprint, serial) of ``peer``'s card as ``node`` pins it: the fingerprint
        from its operator API, the serial from the card in its store."""
        token = self.tokens[node.node_id, "operator"]
        deadline = time.monotonic() + 10
        while True:
            status, answer = await self.api(node, token, "GET", "/api/v1/peers", None)
            fp = next(
                (p["fingerprint"] for p in answer.get("peers", ()) if p["node_id"] == peer), ""
            )
            async with _store(node) as store:
                record = store.get_peer(peer)
            serial = verify_card(record.card).serial if record else 0
            if serial > 1 or time.monotonic() > deadline:
                return fp, serial
            await asyncio.sleep(0.2)

    async def proof_of_delivery(self, message_id: str) -> None:
        """Story 14: JPN-ISA exports the proof that its fraud notice reached PHL-DFA;
        it verifies offline against PHL-DFA's fingerprint, not against another."""
        jpn, phl = self.nodes["JPN-ISA"], self.nodes["PHL-DFA"]
        self.part("A court asks JPN-ISA to prove that the Narita notice reached PHL-DFA")
        proof = self.work / "proof.json"
        export = self.run_cli(jpn, "proof", "export", message_id, "--out", str(proof))
        self.say(
            f"   proof export: {export.stdout.splitlines()[0] if export.stdout else export.stderr.strip()}"
        )
        self.check(
            export.returncode == 0 and "(verifies)" in export.stdout,
            f"JPN-ISA exports one file for message {message_id[:12]}..",
        )
        self.say(
            "   the court's expert checks it offline, with the fingerprint PHL-DFA gave by phone"
        )
        good, wrong = await asyncio.gather(
            asyncio.to_thread(self.run_cli, None, "proof", "verify", str(proof),
                              "--fingerprint", phl.fingerprint),
            asyncio.to_thread(self.run_cli, None, "proof", "verify", str(proof),
                              "--fingerprint", jpn.fingerprint),
        )  # fmt: skip
        self.say(
            f"   -> exit {good.returncode}: {' / '.join(good.stdout.strip().splitlines()[:2])}"
        )
        self.check(
            good.returncode == 0
            and f"{jpn.node_id} -> {phl.node_id}, message {message_id}: accepted" in good.stdout,
            "proof verify with PHL-DFA's fingerprint: OK, the signed receipt says accepted",
        )
        problems = [ln.strip() for ln in wrong.stdout.splitlines() if "problem:" in ln]
        self.say(
            f"   with another fingerprint (JPN-ISA's own) -> exit {wrong.returncode}: {'; '.join(problems)}"
        )
        self.check(
            wrong.returncode != 0 and any("card_untrusted" in p for p in problems),
            "proof verify with another fingerprint fails (card_untrusted, non-zero exit)",
        )

    def audit(self) -> None:
        """Story 13: the lookup is audited by who and a keyed hash; every log verifies."""
        jpn = self.nodes["JPN-ISA"]
        self.part("Auditors verify each node's tamper-evident log")
        shown = self.cli(jpn, "audit", "show", "--kind", "document.lookup", "--json")
        lookups = [json.loads(line) for line in shown.splitlines() if line.strip()]
        self.check(
            any(e.get("actor") == "narita-border" and e.get("subject_hash") for e in lookups),
            "JPN-ISA's log names who looked the passport up (token narita-border), with a keyed hash, not the number",
        )
        for n in self.nodes.values():
            self.cli(n, "audit", "checkpoint")
            out = self.cli(n, "audit", "verify")
            first = out.splitlines()[0] if out else ""
            stats = out.splitlines()[1] if len(out.splitlines()) > 1 else ""
            self.check("OK" in first, f"{n.node_id} audit log verifies ({stats})")

    def run(self) -> int:
        print(f"exchange-node demo: three nodes on loopback, working in {self.work}")
        try:
            self.create()
            self.pin_all()
            for n in self.nodes.values():
                self.start(n)
            self.say("all three nodes serving (mutual TLS, pinned certificates)")
            asyncio.run(self.scenario())
        except Exception as exc:
            self.check(False, f"scenario aborted: {type(exc).__name__}: {exc}")
        finally:
            for n in self.nodes.values():
                self.stop(n)
        passed = sum(ok for ok, _ in self.checks)
        failed = len(self.checks) - passed
        print()
        print(f"demo: {passed} passed, {failed} failed")
        return 0 if failed == 0 and passed > 0 else 1


def _accepted(row) -> bool:
    return row is not None and row.outcome is not None and row.outcome.value == "accepted"


def _signing_key_id(node: DemoNode) -> bytes:
    """The current signing key on the node's own card."""
    return verify_card(node.card.read_bytes()).current_signing_key.key_id


def _receipt_signed_by(signed: bytes, node: DemoNode) -> bool:
    sr = envelope_pb2.SignedReceipt.FromString(signed)
    receipt = envelope_pb2.BatchReceipt.FromString(sr.receipt)
    card = verify_card(node.card.read_bytes())
    entry = card.signing_key(receipt.signer_key_id)
    if entry is None:
        return False
    try:
        ed25519_public_key(entry.public).verify(
            sr.signature, frame(LABEL_RECEIPT_SIGNATURE, sr.receipt)
        )
    except InvalidSignature:
        return False
    return receipt.receiver == node.node_id


def _steps(view: dict) -> list[tuple]:
    return [
        (e["sequence"], e["type"], e["actor"], e["at_ms"], e["from_status"], e["to_status"])
        for e in view.get("timeline", ())
    ]


def _same_case(views: dict[str, dict]) -> bool:
    """Every node holds the case in the same state with the same timeline."""
    seen = {(v.get("status"), v.get("consent"), tuple(_steps(v))) for v in views.values()}
    return len(seen) == 1 and bool(next(iter(seen))[2])


def _receipted(me: str, view: dict, steps: int) -> bool:
    """Node ``me``'s view has ``steps`` steps and each of its own steps went to every
    other participant with a signed receipt."""
    others = {p["node_id"] for p in view.get("participants", ())} - {me}
    return len(view.get("timeline", ())) == steps and all(
        {d["recipient"] for d in e["deliveries"] if d["state"] == "accepted" and d["receipt_id"]}
        == others
        for e in view["timeline"]
        if e["actor"] == me
    )


def _timeline_text(view: dict) -> str:
    return "; ".join(
        f"{e['sequence']} {e['type']} by {e['actor']}" for e in view.get("timeline", ())
    )


@asynccontextmanager
async def _store(node: DemoNode) -> AsyncIterator[SqliteStore]:
    """The node's store, opened beside the running node (as the CLI does)."""
    store = await SqliteStore.open(node.dir / "data" / "node.sqlite")
    try:
        yield store
    finally:
        await store.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_demo(keep: bool = False, workdir: str | None = None) -> int:
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="exchange-node-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o700)
    try:
        return Demo(work).run()
    finally:
        if keep or workdir:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
