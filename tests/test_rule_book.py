"""One rule book: every rule about who may send what gives the same answer on both paths.

Each row is one rule and one input, tried twice:

- the local path: the service method the local API calls for an officer of the acting
  node (``CaseService.open_case`` / ``add_event``, ``NoticeService.submit``);
- the peer path: the acting node seals the same step to another node, which receives the
  batch as from that peer (``Node.receive_batch``, validators and all).

Both must accept, or both refuse with the same stable code. On the peer path the code
travels in the rejection's detail, which the receiver logs as ``envelope.rejected``; the
signed receipt carries the wire reason only (and the ``envelope.rejected`` audit leaf
the same reason), so the row names that too.

Four nodes, opened but not started: nothing is delivered in the background, the test
hands every envelope over itself. Case rows drive a fresh case to the row's state by
performing each step locally and handing it to every other participant.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from exchange_node.config import ConfigError
from exchange_node.domain.documents import Detection, NoticeKind
from exchange_node.domain.repatriation import EventType, Participant, Role, new_case_reference
from exchange_node.errors import ExchangeError
from exchange_node.node import Node
from exchange_node.pb.exchange.v1 import envelope_pb2, notice_pb2
from exchange_node.protocol.envelope import seal
from exchange_node.protocol.errors import wire_reason_name
from exchange_node.protocol.receipts import verify_receipt
from exchange_node.services.cases import event_to_wire
from exchange_node.services.documents import body_for
from exchange_node.services.notices import NoticeDraft
from tests.node_helpers import (
    batch_bytes,
    make_net,
    make_node_dir,
    now_ms,
    set_options,
    sha256,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

JPN, PHL, IOM, THA = "JPN-ISA", "PHL-DFA", "IOM-MNL", "THA-IMM"  # countries JPN PHL XOM THA
E = EventType
ID, ORIGIN, IOM_ROLE, OTHER = Role.IDENTIFYING_STATE, Role.ORIGIN_STATE, Role.IOM, Role.OTHER

Answer = tuple[str, str | None]
"""("accepted", None), or (domain code, wire reason); the local path has no wire reason."""
ACCEPTED: Answer = ("accepted", None)


def refused(code: str, reason: str) -> Answer:
    return (code, reason)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def nodes(tmp_path_factory):
    net = await make_net(tmp_path_factory.mktemp("rule-book"), [JPN, PHL, IOM, THA])
    opened = {node_id: await nd.open() for node_id, nd in net.nodes.items()}
    yield opened
    await net.stop_all()


# --- the two paths ----------------------------------------------------------------------------


async def local(step: Awaitable) -> Answer:
    try:
        await step
    except ExchangeError as exc:
        return (exc.code, None)
    return ACCEPTED


async def deliver(sender: Node, receiver: Node, body: notice_pb2.Body) -> Answer:
    """What ``receiver`` answers to ``body`` sealed by ``sender``: from the signed receipt,
    the detail it logs, and its audit leaf."""
    sealed = seal(
        body.SerializeToString(),
        sender=sender.keys.local,
        recipient=sender.keyring.require(receiver.node_id),
        now_ms=now_ms(),
    )
    batch_id = os.urandom(16)
    with capture_logs() as logs:
        receipt = await receiver.receive_batch(
            batch_bytes(sender.node_id, [sealed.data], batch_id), sender.node_id
        )
    (outcome,) = verify_receipt(
        receipt,
        keyring=sender.keyring,
        receiver=receiver.node_id,
        sender=sender.node_id,
        batch_id=batch_id,
        envelope_hashes=[sha256(sealed.data)],
    ).outcomes
    mid = sealed.message_id.hex()
    if outcome.outcome == envelope_pb2.OUTCOME_ACCEPTED:
        return ACCEPTED
    assert outcome.outcome == envelope_pb2.OUTCOME_REJECTED, outcome
    reason = wire_reason_name(outcome.reason)
    (logged,) = [e for e in logs if e["event"] == "envelope.rejected" and e["message_id"] == mid]
    (leaf,) = receiver.audit.query(kind="envelope.rejected", message_id=mid)
    assert logged["reason"] == leaf.record.reason == reason
    code, sep, _ = logged["detail"].partition(": ")
    assert sep, f"the detail names no code: {logged['detail']!r}"
    return (code, reason)


def check(expect: Answer, on_local: Answer, on_peer: Answer) -> None:
    assert {"local": on_local[0], "peer": on_peer[0]} == {"local": expect[0], "peer": expect[0]}
    assert on_peer[1] == expect[1], f"wire reason {on_peer[1]}, expected {expect[1]}"


# --- cases --------------------------------------------------------------------------------------

EVERYONE = (Participant(JPN, ID), Participant(PHL, ORIGIN), Participant(IOM, IOM_ROLE),
            Participant(THA, OTHER))  # fmt: skip


def wire_participants(people) -> list[notice_pb2.CaseParticipant]:
    to_wire = {
        ID: notice_pb2.CASE_ROLE_IDENTIFYING_STATE,
        ORIGIN: notice_pb2.CASE_ROLE_ORIGIN_STATE,
        IOM_ROLE: notice_pb2.CASE_ROLE_IOM,
        OTHER: notice_pb2.CASE_ROLE_OTHER,
    }
    return [notice_pb2.CaseParticipant(node_id=p.node_id, role=to_wire[p.role]) for p in people]


def case_body(ref: str, kind: EventType, seq: int, **fields) -> notice_pb2.Body:
    fields.setdefault("event_id", secrets.token_bytes(16))
    fields.setdefault("occurred_at_ms", now_ms())
    return notice_pb2.Body(
        case_event=notice_pb2.CaseEvent(
            case_ref=ref, type=event_to_wire(kind), sequence=seq, **fields
        )
    )


async def relay_last(nodes, actor: str, ref: str) -> None:
    """Hand the actor's latest step of ``ref`` to every other participant, as sent."""
    case = nodes[actor].services.cases.require(ref)
    e = case.events[-1]
    extra = {"participants": wire_participants(case.participants)} if e.sequence == 1 else {}
    body = case_body(ref, e.kind, e.sequence, event_id=e.event_id, occurred_at_ms=e.at_ms, **extra)
    for p in case.participants:
        if p.node_id != actor:
            assert await deliver(nodes[actor], nodes[p.node_id], body) == ACCEPTED


async def case_in_state(nodes, steps) -> str:
    """A new case of EVERYONE, opened by JPN, after ``steps`` on every participant."""
    case, _ = await nodes[JPN].services.cases.open_case(EVERYONE, None, "", actor="officer")
    await relay_last(nodes, JPN, case.case_ref)
    for actor, kind in steps:
        await nodes[actor].services.cases.add_event(case.case_ref, kind, "", actor="officer")
        await relay_last(nodes, actor, case.case_ref)
    return case.case_ref


REFERRED: list = []
CONSENTED = [(JPN, E.RECORD_CONSENT)]
ASSESSED = [*CONSENTED, (IOM, E.RECORD_ASSESSMENT)]
ACCEPTED_BY_ORIGIN = [*ASSESSED, (PHL, E.ACCEPT_RETURN)]
DOCUMENT_REQUESTED = [*ACCEPTED_BY_ORIGIN, (IOM, E.REQUEST_TRAVEL_DOCUMENT)]
IN_TRANSIT = [*ACCEPTED_BY_ORIGIN, (IOM, E.PLAN_TRAVEL), (IOM, E.DEPART)]
WITHDRAWN = [*ACCEPTED_BY_ORIGIN, (IOM, E.WITHDRAW_CONSENT)]
SUSPENDED = [*ASSESSED, (PHL, E.SUSPEND)]
CANCELLED = [*CONSENTED, (IOM, E.CANCEL)]

NO_ROLE = refused("role_not_permitted", "illegal_transition")
ILLEGAL = refused("illegal_transition", "illegal_transition")
BAD_PARTICIPANTS = refused("invalid_participants", "invalid_content")


@dataclass(frozen=True)
class OpenRow:
    """JPN opens a case naming ``people`` (itself included); PHL receives it."""

    id: str
    people: tuple[Participant, ...]
    expect: Answer


OPEN_ROWS = [
    OpenRow("identifying state opens", EVERYONE[:3], ACCEPTED),
    OpenRow("a participant in role OTHER", (EVERYONE[0], EVERYONE[1], EVERYONE[3]), ACCEPTED),
    OpenRow("receiver named identifying state too",
            (Participant(JPN, ID), Participant(PHL, ID)), BAD_PARTICIPANTS),
    OpenRow("third node named identifying state",
            (Participant(JPN, ID), Participant(PHL, ORIGIN), Participant(IOM, ID)),
            BAD_PARTICIPANTS),
    OpenRow("opener in another role",
            (Participant(JPN, ORIGIN), Participant(PHL, ORIGIN)), BAD_PARTICIPANTS),
    OpenRow("a node named twice",
            (Participant(JPN, ID), Participant(PHL, ORIGIN), Participant(PHL, IOM_ROLE)),
            BAD_PARTICIPANTS),
    OpenRow("nobody else named", (Participant(JPN, ID),), BAD_PARTICIPANTS),
]  # fmt: skip


@pytest.mark.parametrize("row", OPEN_ROWS, ids=lambda r: r.id)
async def test_opening_a_case_gets_the_same_answer_on_both_paths(nodes, row: OpenRow):
    on_local = await local(
        nodes[JPN].services.cases.open_case(row.people, None, "", actor="officer")
    )
    year = dt.datetime.now(dt.UTC).year
    ref = new_case_reference("JPN", year, secrets.token_bytes(5))
    body = case_body(ref, E.OPEN_CASE, 1, participants=wire_participants(row.people))
    on_peer = await deliver(nodes[JPN], nodes[PHL], body)
    check(row.expect, on_local, on_peer)
    stored = nodes[PHL].services.cases.get(ref)
    assert (stored is not None) == (row.expect == ACCEPTED)


@dataclass(frozen=True)
class StepRow:
    """In a case of EVERYONE after ``before``, ``actor`` performs ``kind``."""

    id: str
    before: list
    actor: str
    kind: EventType
    expect: Answer
    receiver: str = field(default="")


STEP_ROWS = [
    # Who may take which step (the roles of the lifecycle table).
    StepRow("identifying state records consent", REFERRED, JPN, E.RECORD_CONSENT, ACCEPTED),
    StepRow("IOM records consent", REFERRED, IOM, E.RECORD_CONSENT, ACCEPTED),
    StepRow("origin state may not record consent", REFERRED, PHL, E.RECORD_CONSENT, NO_ROLE),
    StepRow("role OTHER may not even cancel", REFERRED, THA, E.CANCEL, NO_ROLE),
    StepRow("origin state accepts the return", ASSESSED, PHL, E.ACCEPT_RETURN, ACCEPTED),
    StepRow("IOM may not accept the return", ASSESSED, IOM, E.ACCEPT_RETURN, NO_ROLE),
    StepRow("identifying state may not accept the return", ASSESSED, JPN, E.ACCEPT_RETURN,
            NO_ROLE),
    StepRow("origin state issues the travel document", DOCUMENT_REQUESTED, PHL,
            E.ISSUE_TRAVEL_DOCUMENT, ACCEPTED),
    StepRow("IOM may not issue the travel document", DOCUMENT_REQUESTED, IOM,
            E.ISSUE_TRAVEL_DOCUMENT, NO_ROLE),
    StepRow("origin state may not withdraw consent", ACCEPTED_BY_ORIGIN, PHL,
            E.WITHDRAW_CONSENT, NO_ROLE),
    StepRow("IOM withdraws consent", ACCEPTED_BY_ORIGIN, IOM, E.WITHDRAW_CONSENT, ACCEPTED),
    # The identifying state opens a case, once.
    StepRow("identifying state may not open it again", REFERRED, JPN, E.OPEN_CASE, ILLEGAL),
    StepRow("origin state may not open it again", CONSENTED, PHL, E.OPEN_CASE, ILLEGAL),
    # The lifecycle: steps in their order.
    StepRow("no assessment before consent", REFERRED, IOM, E.RECORD_ASSESSMENT, ILLEGAL),
    StepRow("no departure before a travel plan", ACCEPTED_BY_ORIGIN, IOM, E.DEPART, ILLEGAL),
    StepRow("travel planned on a valid passport", ACCEPTED_BY_ORIGIN, IOM, E.PLAN_TRAVEL,
            ACCEPTED),
    StepRow("origin state confirms arrival", IN_TRANSIT, PHL, E.CONFIRM_ARRIVAL, ACCEPTED),
    StepRow("identifying state may not confirm arrival", IN_TRANSIT, JPN, E.CONFIRM_ARRIVAL,
            NO_ROLE),
    StepRow("nothing but resume while suspended", SUSPENDED, PHL, E.ACCEPT_RETURN, ILLEGAL),
    StepRow("a suspended case resumes", SUSPENDED, IOM, E.RESUME, ACCEPTED),
    StepRow("a cancelled case takes no step", CANCELLED, IOM, E.RECORD_ASSESSMENT, ILLEGAL),
    # Consent before travel; withdrawn consent stops the case for good.
    StepRow("no travel plan once consent is withdrawn", WITHDRAWN, IOM, E.PLAN_TRAVEL,
            ILLEGAL),
    StepRow("consent is not recorded again once withdrawn", WITHDRAWN, JPN, E.RECORD_CONSENT,
            ILLEGAL),
]  # fmt: skip


@pytest.mark.parametrize("row", STEP_ROWS, ids=lambda r: r.id)
async def test_a_case_step_gets_the_same_answer_on_both_paths(nodes, row: StepRow):
    ref = await case_in_state(nodes, row.before)
    actor = nodes[row.actor]
    receiver = nodes[row.receiver or next(p.node_id for p in EVERYONE if p.node_id != row.actor)]
    version = receiver.services.cases.require(ref).state.version
    assert actor.services.cases.require(ref).state.version == version
    extra = {"participants": wire_participants(EVERYONE)} if row.kind == E.OPEN_CASE else {}
    on_peer = await deliver(actor, receiver, case_body(ref, row.kind, version + 1, **extra))
    on_local = await local(actor.services.cases.add_event(ref, row.kind, "", actor="officer"))
    check(row.expect, on_local, on_peer)
    # Each node holds what it answered: the step, or nothing of it.
    for node in (actor, receiver):
        assert node.services.cases.require(ref).state.version == version + (row.expect == ACCEPTED)


# --- travel-document notices ----------------------------------------------------------------------


def doc(state: str = "PHL", number: str | None = None) -> notice_pb2.DocumentRef:
    number = number or "P" + secrets.token_hex(4).upper()
    return notice_pb2.DocumentRef(issuing_state=state, document_type="P", document_number=number)


def status(kind: NoticeKind = NoticeKind.STOLEN, document=None, **kw) -> NoticeDraft:
    return NoticeDraft(kind, document or doc(), now_ms() - 60_000, **kw)


def fraud(kind: NoticeKind = NoticeKind.COUNTERFEIT, document=None, **kw) -> NoticeDraft:
    return NoticeDraft(
        kind, document or doc(), detection=Detection("JPNRT", now_ms() - 60_000), **kw
    )


def notice_body(draft: NoticeDraft, notice_id: bytes) -> notice_pb2.Body:
    return body_for(
        draft.kind,
        notice_id=notice_id,
        document=draft.document,
        effective_at_ms=draft.effective_at_ms,
        detection=draft.detection,
        remarks=draft.remarks,
        supersedes=draft.supersedes,
        reason=draft.reason,
    )


async def publish(nodes, sender: str, draft: NoticeDraft) -> bytes:
    """``sender`` submits ``draft`` locally and every other node accepts it; its id."""
    entry, _ = await nodes[sender].services.notices.submit(draft, None, actor="officer")
    notice_id = bytes.fromhex(entry.notice.notice_id)
    for other, node in nodes.items():
        if other != sender:
            assert await deliver(nodes[sender], node, notice_body(draft, notice_id)) == ACCEPTED
    return notice_id


Setup = Callable[[dict], Awaitable[NoticeDraft]]


def plain(draft: Callable[[], NoticeDraft]) -> Setup:
    async def setup(nodes) -> NoticeDraft:
        return draft()

    return setup


def correcting(kind: NoticeKind, *, how=None, chain: int = 0, detection=False) -> Setup:
    """A correction of PHL's STOLEN notice (after ``chain`` earlier corrections by PHL,
    or a withdrawal of it when ``how == 'withdrawn'``); ``how == 'other document'``
    names another document."""

    async def setup(nodes) -> NoticeDraft:
        original = status()
        target = await publish(nodes, PHL, original)
        if how == "withdrawn":
            target = await publish(
                nodes, PHL, NoticeDraft(NoticeKind.WITHDRAWAL, None, supersedes=target)
            )
        for _ in range(chain):
            await publish(nodes, PHL, status(NoticeKind.LOST, original.document, supersedes=target))
        document = doc() if how == "other document" else original.document
        if kind == NoticeKind.WITHDRAWAL:
            return NoticeDraft(kind, None, supersedes=target, reason="entered in error")
        if detection:
            return fraud(kind, document, supersedes=target)
        return status(kind, document, supersedes=target)

    return setup


@dataclass(frozen=True)
class NoticeRow:
    """``sender`` sends the notice ``setup`` makes; ``receiver`` receives it."""

    id: str
    sender: str
    receiver: str
    setup: Setup
    expect: Answer


NOT_ISSUING = refused("not_issuing_state", "invalid_content")
NOT_ORIGINAL = refused("not_original_sender", "invalid_content")

NOTICE_ROWS = [
    # Status notices: only the issuing state; never an international body.
    NoticeRow("issuing state reports its document stolen", PHL, JPN, plain(status), ACCEPTED),
    NoticeRow("another state may not report it stolen", JPN, PHL, plain(status), NOT_ISSUING),
    NoticeRow("an international body may not report it lost", IOM, PHL,
              plain(lambda: status(NoticeKind.LOST)), NOT_ISSUING),
    NoticeRow("an international body may not revoke even its own code's document", IOM, PHL,
              plain(lambda: status(NoticeKind.REVOKED, doc("XOM"))), NOT_ISSUING),
    # Fraud detections: any node, about any state's document.
    NoticeRow("another state reports a counterfeit", JPN, PHL, plain(fraud), ACCEPTED),
    NoticeRow("an international body reports a forgery", IOM, PHL,
              plain(lambda: fraud(NoticeKind.FORGED)), ACCEPTED),
    # Corrections and withdrawals: only by the original sender, within the rules.
    NoticeRow("the source corrects its notice", PHL, JPN, correcting(NoticeKind.LOST), ACCEPTED),
    NoticeRow("the source withdraws its notice", PHL, JPN, correcting(NoticeKind.WITHDRAWAL),
              ACCEPTED),
    NoticeRow("another state may not withdraw it", JPN, PHL, correcting(NoticeKind.WITHDRAWAL),
              NOT_ORIGINAL),
    NoticeRow("an international body may not withdraw it", IOM, PHL,
              correcting(NoticeKind.WITHDRAWAL), NOT_ORIGINAL),
    NoticeRow("another state may not replace it, even by a detection", JPN, IOM,
              correcting(NoticeKind.COUNTERFEIT, detection=True), NOT_ORIGINAL),
    NoticeRow("a status notice is not corrected into a fraud detection", PHL, JPN,
              correcting(NoticeKind.COUNTERFEIT, detection=True),
              refused("correction_changes_family", "invalid_content")),
    NoticeRow("a correction stays with its document", PHL, JPN,
              correcting(NoticeKind.LOST, how="other document"),
              refused("supersedes_other_document", "invalid_content")),
    NoticeRow("a withdrawal is not corrected", PHL, JPN,
              correcting(NoticeKind.STOLEN, how="withdrawn"),
              refused("cannot_supersede_withdrawal", "invalid_content")),
    NoticeRow("a notice is superseded once", PHL, JPN, correcting(NoticeKind.REVOKED, chain=1),
              refused("already_superseded", "invalid_content")),
]  # fmt: skip


@pytest.mark.parametrize("row", NOTICE_ROWS, ids=lambda r: r.id)
async def test_a_notice_gets_the_same_answer_on_both_paths(nodes, row: NoticeRow):
    draft = await row.setup(nodes)
    on_peer = await deliver(
        nodes[row.sender], nodes[row.receiver], notice_body(draft, secrets.token_bytes(16))
    )
    on_local = await local(nodes[row.sender].services.notices.submit(draft, None, actor="officer"))
    check(row.expect, on_local, on_peer)


async def test_a_node_whose_config_country_is_not_its_cards_does_not_start(tmp_path):
    # A receiver knows only the card, so the node must never judge its own notices by
    # another country: a config naming one other than the card's is refused at start-up.
    nd = make_node_dir(tmp_path, "JPN-ALT")
    nd.config_path.write_text(set_options(nd.config_path.read_text(), {"country": "PHL"}))
    with pytest.raises(ConfigError, match=r"\[node\] country: expected 'JPN' \(the country on"):
        await nd.open()
