"""A batch's envelopes are checked and applied in order inside one transaction: a refused
envelope leaves nothing behind that the next one could build on.

The receipt must never say ACCEPTED for a step the receiver did not store. A batch
``[step reusing an accepted message id, the step after it]`` once got
``message_id_reused`` for the first and ACCEPTED for the second, though neither was
stored: the first had advanced a provisional case state before storage refused it.
"""

from __future__ import annotations

import os
import secrets

import pytest

from exchange_node.audit.leaf import LeafKind
from exchange_node.domain.documents import Detection, NoticeKind
from exchange_node.domain.repatriation import CaseStatus, EventType, Participant, Role
from exchange_node.pb.exchange.v1 import envelope_pb2, notice_pb2
from exchange_node.protocol.envelope import seal
from exchange_node.protocol.errors import wire_reason_name
from exchange_node.protocol.receipts import verify_receipt
from exchange_node.services.cases import event_to_wire
from exchange_node.services.documents import body_for
from tests.node_helpers import batch_bytes, make_net, now_ms, sha256

pytestmark = pytest.mark.usefixtures("node_store_backend")

JPN, PHL = "JPN-ISA", "PHL-DFA"


@pytest.fixture
async def pair(tmp_path):
    net = await make_net(tmp_path, [JPN, PHL])
    jpn, phl = await net[JPN].open(), await net[PHL].open()  # nothing runs in the background
    yield jpn, phl
    await net.stop_all()


def sealed(sender, receiver, body: notice_pb2.Body, message_id: bytes | None = None):
    return seal(
        body.SerializeToString(),
        sender=sender.keys.local,
        recipient=sender.keyring.require(receiver.node_id),
        now_ms=now_ms(),
        **({"message_id": message_id} if message_id else {}),
    )


async def hand_over(sender, receiver, envelopes) -> list[tuple[str, str]]:
    """``receiver``'s signed answer to a batch of ``envelopes``: (outcome, reason) each."""
    batch_id = os.urandom(16)
    receipt = await receiver.receive_batch(
        batch_bytes(sender.node_id, [e.data for e in envelopes], batch_id), sender.node_id
    )
    verified = verify_receipt(
        receipt,
        keyring=sender.keyring,
        receiver=receiver.node_id,
        sender=sender.node_id,
        batch_id=batch_id,
        envelope_hashes=[sha256(e.data) for e in envelopes],
    )
    names = {
        envelope_pb2.OUTCOME_ACCEPTED: "accepted",
        envelope_pb2.OUTCOME_DUPLICATE: "duplicate",
        envelope_pb2.OUTCOME_REJECTED: "rejected",
    }
    return [
        (names[o.outcome], wire_reason_name(o.reason) if o.reason else "")
        for o in verified.outcomes
    ]


def case_step(ref: str, kind: EventType, seq: int) -> notice_pb2.Body:
    return notice_pb2.Body(
        case_event=notice_pb2.CaseEvent(
            event_id=secrets.token_bytes(16),
            case_ref=ref,
            type=event_to_wire(kind),
            sequence=seq,
            occurred_at_ms=now_ms(),
        )
    )


async def test_a_step_after_one_refused_for_a_reused_message_id_is_judged_by_what_is_stored(pair):
    jpn, phl = pair
    case, ids = await jpn.services.cases.open_case(
        [Participant(PHL, Role.ORIGIN_STATE)], None, "", actor="officer"
    )
    [opening] = jpn.store.pending(PHL, 10)
    assert await hand_over(jpn, phl, [_Raw(opening.envelope)]) == [("accepted", "")]
    reused = sealed(jpn, phl, case_step(case.case_ref, EventType.RECORD_CONSENT, 2), ids[PHL])
    after = sealed(jpn, phl, case_step(case.case_ref, EventType.RECORD_ASSESSMENT, 3))

    answer = await hand_over(jpn, phl, [reused, after])

    assert answer[0] == ("rejected", "message_id_reused")
    assert answer[1][0] == "rejected"  # nothing at sequence 2 is stored: 3 cannot follow
    held = phl.services.cases.get(case.case_ref)
    assert held.state.status is CaseStatus.REFERRED and len(held.events) == 1
    steps = [r.record for r in phl.audit.query(kind=LeafKind.CASE_TRANSITION, limit=100)]
    assert [s.attrs["event"] for s in steps] == ["open_case"]

    # The same steps, sent properly, are taken in order within one batch.
    consent = sealed(jpn, phl, case_step(case.case_ref, EventType.RECORD_CONSENT, 2))
    assessment = sealed(jpn, phl, case_step(case.case_ref, EventType.RECORD_ASSESSMENT, 3))
    assert await hand_over(jpn, phl, [consent, assessment]) == [("accepted", "")] * 2
    assert phl.services.cases.get(case.case_ref).state.status is CaseStatus.ASSESSED


async def test_a_correction_after_a_refused_notice_in_the_same_batch_finds_nothing_to_correct(pair):
    jpn, phl = pair
    first = sealed(jpn, phl, _counterfeit("P0000001"))
    assert await hand_over(jpn, phl, [first]) == [("accepted", "")]
    notice = _counterfeit("P0000002")
    reusing = sealed(jpn, phl, notice, first.message_id)
    correction = sealed(jpn, phl, _counterfeit("P0000002", supersedes=notice))

    answer = await hand_over(jpn, phl, [reusing, correction])

    assert answer == [("rejected", "message_id_reused"), ("rejected", "invalid_content")]
    assert not phl.services.index.lookup("PHL", "P0000002").records
    assert phl.store.count_notices() == 1


async def test_a_correction_may_follow_its_notice_in_the_same_batch(pair):
    jpn, phl = pair
    notice = _counterfeit("P0000003")
    correction = _counterfeit("P0000003", supersedes=notice)

    answer = await hand_over(jpn, phl, [sealed(jpn, phl, notice), sealed(jpn, phl, correction)])

    assert answer == [("accepted", "")] * 2
    [(_, history)] = phl.services.index.lookup("PHL", "P0000003").records
    assert len(history) == 2


class _Raw:
    """An envelope already sealed (taken from the sender's outbox)."""

    def __init__(self, data: bytes) -> None:
        self.data = data


def _counterfeit(number: str, supersedes: notice_pb2.Body | None = None) -> notice_pb2.Body:
    return body_for(
        NoticeKind.COUNTERFEIT,
        notice_id=secrets.token_bytes(16),
        document=notice_pb2.DocumentRef(
            issuing_state="PHL", document_type="P", document_number=number
        ),
        detection=Detection("JPNRT", now_ms() - 60_000, "Narita"),
        supersedes=supersedes.fraud_notice.notice_id if supersedes is not None else None,
    )
