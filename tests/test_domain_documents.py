"""Travel document notices: keys, authority, detections, supersession and history folding."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange_node.domain.documents import (
    FRAUD_KINDS,
    STATUS_KINDS,
    Detection,
    DocumentKey,
    Notice,
    NoticeKind,
    check_detection,
    check_notice,
    check_notice_authority,
    check_supersession,
    fold_history,
)
from exchange_node.domain.mrz import check_digit, parse_mrz
from exchange_node.errors import ConflictError, NotFoundError, ValidationError

K = NoticeKind
NOW = 1_780_000_000_000
SKEW = 300_000
PHL_DOC = DocumentKey("PHL", "P", "P1234567A")
HERE = Detection(place="JPNRT", detected_at_ms=NOW - 60_000, authority="ISA Narita")


def _notice(
    notice_id: str,
    kind: NoticeKind,
    *,
    node: str = "PHL-DFA",
    country: str = "PHL",
    at: int = NOW - 1_000,
    supersedes: str | None = None,
    document: DocumentKey = PHL_DOC,
    detection: Detection | None = None,
) -> Notice:
    if detection is None and kind in FRAUD_KINDS:
        detection = HERE
    return Notice(notice_id, node, country, kind, document, at, supersedes, detection)


def _jpn_fraud(notice_id: str, kind: NoticeKind = K.COUNTERFEIT, **kw) -> Notice:
    return _notice(notice_id, kind, node="JPN-ISA", country="JPN", **kw)


def _check(notice: Notice, **kw) -> Notice:
    return check_notice(notice, now_ms=NOW, max_skew_ms=SKEW, **kw)


def _error(exc_type, fn, *args, **kw):
    with pytest.raises(exc_type) as err:
        fn(*args, **kw)
    return err.value


# Document keys -----------------------------------------------------------------------------


def test_document_key_is_normalised():
    key = DocumentKey(" d<< ", "p<", " l898902c3 ")
    assert (key.issuing_state, key.document_type, key.number) == ("D", "P", "L898902C3")


def test_document_key_type_may_be_unknown():
    assert DocumentKey("PHL", " ", "X1").document_type == ""


@pytest.mark.parametrize(
    ("args", "code", "field"),
    [
        (("DEU", "P", "X1"), "invalid_state_code", "document.issuing_state"),
        (("PHL", "Q", "X1"), "invalid_document_type", "document.document_type"),
        (("PHL", "P", "X-1"), "invalid_document_number", "document.document_number"),
        (("PHL", "P", ""), "invalid_document_number", "document.document_number"),
    ],
)
def test_invalid_document_key_names_the_field(args, code, field):
    err = _error(ValidationError, DocumentKey, *args)
    assert (err.code, err.field) == (code, field)


def test_document_key_from_mrz():
    line1 = "P<PHLDELA<CRUZ<<MARIA".ljust(44, "<")
    body = "P1234567A" + str(check_digit("P1234567A")) + "PHL900101"
    body += str(check_digit("900101")) + "F300101" + str(check_digit("300101")) + "<" * 15
    line2 = body + str(check_digit(body[0:10] + body[13:20] + body[21:43]))
    key = DocumentKey.from_mrz(parse_mrz([line1, line2]))
    assert key == DocumentKey("PHL", "P", "P1234567A")


def test_same_document_ignores_an_unknown_type_but_not_a_different_one():
    assert PHL_DOC.same_document(DocumentKey("PHL", "", "P1234567A"))
    assert not PHL_DOC.same_document(DocumentKey("PHL", "I", "P1234567A"))
    assert not PHL_DOC.same_document(DocumentKey("IDN", "P", "P1234567A"))


# Authority ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(STATUS_KINDS))
def test_issuing_state_may_send_every_status(kind):
    check_notice_authority(kind, "PHL", PHL_DOC)


@pytest.mark.parametrize("kind", sorted(STATUS_KINDS))
def test_other_state_may_not_send_a_status(kind):
    err = _error(ValidationError, check_notice_authority, kind, "JPN", PHL_DOC)
    assert (err.code, err.field) == ("not_issuing_state", "kind")
    assert "only the issuing state (PHL)" in err.message


def test_germany_d_fillers_node_may_report_a_german_document():
    check_notice_authority(K.STOLEN, "D<<", DocumentKey("D", "P", "C01X00T47"))


@pytest.mark.parametrize("country", ["UNO", "XOM", "EUE", "XPO"])
def test_international_body_may_not_send_a_status_even_for_its_own_code(country):
    err = _error(
        ValidationError, check_notice_authority, K.STOLEN, country, DocumentKey(country, "P", "1")
    )
    assert err.code == "not_issuing_state"
    assert "may only send fraud detections" in err.message


@pytest.mark.parametrize("kind", sorted(FRAUD_KINDS))
@pytest.mark.parametrize("country", ["JPN", "PHL", "UNO", "XOM"])
def test_any_node_may_send_a_fraud_detection(kind, country):
    check_notice_authority(kind, country, PHL_DOC)


def test_unknown_notice_kind_is_refused():
    err = _error(ValidationError, check_notice_authority, "MISPLACED", "PHL", PHL_DOC)
    assert (err.code, err.field) == ("unknown_notice_kind", "kind")


def test_notice_kind_may_be_given_as_its_string_value():
    check_notice_authority("STOLEN", "PHL", PHL_DOC)  # type: ignore[arg-type]


def test_sender_country_must_be_an_icao_code():
    err = _error(ValidationError, check_notice_authority, K.COUNTERFEIT, "JAPAN", PHL_DOC)
    assert (err.code, err.field) == ("invalid_state_code", "sender.country")


# Detections --------------------------------------------------------------------------------


def _detect(kind=K.FORGED, detection=HERE):
    return check_detection(kind, detection, now_ms=NOW, max_skew_ms=SKEW)


@pytest.mark.parametrize("place", ["JPNRT", "NRT", "Port of Tanjung Priok"])
def test_detection_place_may_be_a_locode_an_iata_code_or_a_port_name(place):
    assert _detect(detection=Detection(place, NOW)).place == place


def test_detection_text_has_its_white_space_collapsed():
    got = _detect(detection=Detection("  Port  of\tManila ", NOW, " BI  NAIA "))
    assert (got.place, got.authority) == ("Port of Manila", "BI NAIA")


@pytest.mark.parametrize("kind", sorted(FRAUD_KINDS))
def test_fraud_detection_requires_place_and_time(kind):
    err = _error(ValidationError, _detect, kind, None)
    assert (err.code, err.field) == ("detection_required", "detection")


@pytest.mark.parametrize("kind", [*sorted(STATUS_KINDS), K.WITHDRAWAL])
def test_status_notice_carries_no_detection(kind):
    err = _error(ValidationError, _detect, kind, HERE)
    assert (err.code, err.field) == ("detection_not_applicable", "detection")


def test_status_notice_without_detection_passes():
    assert _detect(K.LOST, None) is None


@pytest.mark.parametrize("place", ["", "   ", "x" * 101, "NRT\x00", 42])
def test_bad_detection_place_is_refused(place):
    err = _error(ValidationError, _detect, K.FORGED, Detection(place, NOW))
    assert (err.code, err.field) == ("invalid_detection_place", "detection.place")


def test_place_of_100_characters_is_accepted():
    assert len(_detect(detection=Detection("x" * 100, NOW)).place) == 100


def test_too_long_detecting_authority_is_refused():
    err = _error(ValidationError, _detect, K.FORGED, Detection("NRT", NOW, "a" * 201))
    assert (err.code, err.field) == ("invalid_detecting_authority", "detection.authority")


@pytest.mark.parametrize("at", [-1, 1.0, None, True])
def test_detection_time_must_be_integer_milliseconds(at):
    err = _error(ValidationError, _detect, K.FORGED, Detection("NRT", at))
    assert (err.code, err.field) == ("invalid_detection_time", "detection.detected_at_ms")


def test_detection_in_the_future_within_skew_is_accepted():
    assert _detect(detection=Detection("NRT", NOW + SKEW)).detected_at_ms == NOW + SKEW


def test_detection_in_the_future_beyond_skew_is_refused():
    err = _error(ValidationError, _detect, K.FORGED, Detection("NRT", NOW + SKEW + 1))
    assert (err.code, err.field) == ("detection_in_future", "detection.detected_at_ms")


# One new notice ----------------------------------------------------------------------------


def test_valid_status_notice_passes_and_is_normalised():
    got = _check(_notice("n1", K.STOLEN, country="phl"))
    assert got.sender_country == "PHL"


def test_valid_fraud_notice_passes():
    assert _check(_jpn_fraud("n1")).detection == HERE


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"notice_id": ""}, "invalid_notice_id", "notice_id"),
        ({"sender_node": ""}, "invalid_sender", "sender.node"),
        ({"issued_at_ms": -5}, "invalid_notice_time", "issued_at_ms"),
        ({"issued_at_ms": NOW + SKEW + 1}, "notice_in_future", "issued_at_ms"),
        ({"kind": K.WITHDRAWAL}, "supersedes_required", "supersedes"),
        ({"supersedes": "n1"}, "supersedes_itself", "supersedes"),
        ({"sender_country": "JPN"}, "not_issuing_state", "kind"),
        ({"detection": HERE}, "detection_not_applicable", "detection"),
    ],
)
def test_invalid_notice_is_refused_naming_the_field(change, code, field):
    notice = dataclasses.replace(_notice("n1", K.STOLEN), **change)
    err = _error(ValidationError, _check, notice)
    assert (err.code, err.field) == (code, field)


def test_correction_of_an_unknown_notice_is_not_found():
    err = _error(NotFoundError, _check, _notice("n2", K.LOST, supersedes="n1"))
    assert (err.code, err.field) == ("superseded_notice_not_found", "supersedes")


def test_correction_by_the_original_sender_passes():
    original = _notice("n1", K.STOLEN)
    assert _check(_notice("n2", K.LOST, supersedes="n1"), target=original).kind is K.LOST


def test_withdrawal_by_the_original_sender_passes():
    original = _jpn_fraud("n1")
    # A withdrawal carries no detection, even when it withdraws a fraud detection.
    withdrawal = Notice("n2", "JPN-ISA", "JPN", K.WITHDRAWAL, PHL_DOC, NOW, "n1")
    assert _check(withdrawal, target=original).kind is K.WITHDRAWAL


def _supersession_error(notice, target, superseded_by=None):
    return _error(
        ConflictError, check_supersession, notice, target, target_superseded_by=superseded_by
    )


def test_only_the_original_sender_may_correct_or_withdraw():
    err = _supersession_error(
        _notice("n2", K.WITHDRAWAL, node="PHL-OTHER", supersedes="n1"),
        _notice("n1", K.STOLEN),
    )
    assert (err.code, err.field) == ("not_original_sender", "supersedes")
    assert "PHL-DFA" in err.message


def test_a_withdrawal_cannot_be_superseded():
    err = _supersession_error(
        _notice("n3", K.STOLEN, supersedes="n2"),
        _notice("n2", K.WITHDRAWAL, supersedes="n1"),
    )
    assert err.code == "cannot_supersede_withdrawal"


def test_a_notice_is_superseded_once_only():
    err = _supersession_error(
        _notice("n3", K.LOST, supersedes="n1"), _notice("n1", K.STOLEN), superseded_by="n2"
    )
    assert err.code == "already_superseded"
    assert "correct or withdraw n2 instead" in err.message


def test_correction_must_be_about_the_same_document():
    err = _supersession_error(
        _notice("n2", K.STOLEN, supersedes="n1", document=DocumentKey("PHL", "P", "P7654321B")),
        _notice("n1", K.STOLEN),
    )
    assert (err.code, err.field) == ("supersedes_other_document", "document")


def test_correction_keeps_the_family_of_notice():
    err = _supersession_error(
        _notice("n2", K.COUNTERFEIT, supersedes="n1"), _notice("n1", K.STOLEN)
    )
    assert (err.code, err.field) == ("correction_changes_family", "kind")


def test_check_notice_raises_supersession_conflicts():
    err = _error(
        ConflictError,
        _check,
        _notice("n2", K.LOST, supersedes="n1"),
        target=_notice("n1", K.STOLEN),
        target_superseded_by="n9",
    )
    assert err.code == "already_superseded"


# History folding ---------------------------------------------------------------------------


def _entry(record, notice_id):
    return next(e for e in record.history if e.notice.notice_id == notice_id)


def test_fold_of_nothing_is_a_programming_error():
    with pytest.raises(ValueError):
        fold_history([])


def test_fold_of_different_documents_is_a_programming_error():
    other = DocumentKey("PHL", "P", "P7654321B")
    with pytest.raises(ValueError):
        fold_history([_notice("n1", K.STOLEN), _notice("n2", K.LOST, document=other)])


def test_latest_status_notice_sets_the_status():
    record = fold_history([_notice("n1", K.STOLEN, at=1), _notice("n2", K.REVOKED, at=2)])
    assert record.current_status is K.REVOKED
    assert record.status.notice_id == "n2"


def test_document_without_status_notices_has_no_status_but_lists_fraud():
    record = fold_history([_jpn_fraud("f1"), _jpn_fraud("f2", K.IMPOSTOR, at=NOW)])
    assert record.status is None and record.current_status is None
    assert [n.notice_id for n in record.fraud] == ["f1", "f2"]


def test_story_counterfeit_then_revoked_then_corrected_keeps_the_whole_history():
    record = fold_history(
        [
            _jpn_fraud("f1", at=10),
            _notice("s1", K.REVOKED, at=20),
            _notice("s2", K.INVALIDATED, at=30, supersedes="s1"),
        ]
    )
    assert record.current_status is K.INVALIDATED
    assert [n.notice_id for n in record.fraud] == ["f1"]
    assert [e.notice.notice_id for e in record.history] == ["f1", "s1", "s2"]
    revoked = _entry(record, "s1")
    assert (revoked.in_effect, revoked.superseded_by, revoked.withdrawn) == (False, "s2", False)


def test_withdrawn_status_no_longer_counts_and_an_older_one_returns():
    record = fold_history(
        [
            _notice("s1", K.STOLEN, at=1),
            _notice("s2", K.REVOKED, at=2),
            _notice("w1", K.WITHDRAWAL, at=3, supersedes="s2"),
        ]
    )
    assert record.current_status is K.STOLEN
    assert _entry(record, "s2").withdrawn
    assert not _entry(record, "w1").in_effect


def test_withdrawn_fraud_detection_is_no_longer_listed():
    withdrawal = Notice("w1", "JPN-ISA", "JPN", K.WITHDRAWAL, PHL_DOC, NOW, "f1")
    record = fold_history([_jpn_fraud("f1", at=1), withdrawal])
    assert record.fraud == ()
    assert len(record.history) == 2


def test_withdrawing_a_correction_does_not_bring_back_the_original():
    record = fold_history(
        [
            _notice("s1", K.STOLEN, at=1),
            _notice("s2", K.LOST, at=2, supersedes="s1"),
            _notice("w1", K.WITHDRAWAL, at=3, supersedes="s2"),
        ]
    )
    assert record.current_status is None
    assert _entry(record, "s1").superseded_by == "s2"


def test_status_from_a_non_issuing_state_is_set_aside():
    record = fold_history([_notice("s1", K.STOLEN, node="JPN-ISA", country="JPN")])
    assert record.current_status is None
    assert _entry(record, "s1").anomaly == "not_issuing_state"


def test_withdrawal_by_another_sender_has_no_effect():
    withdrawal = Notice("w1", "JPN-ISA", "JPN", K.WITHDRAWAL, PHL_DOC, 5, "s1")
    record = fold_history([_notice("s1", K.STOLEN, at=1), withdrawal])
    assert record.current_status is K.STOLEN
    assert _entry(record, "w1").anomaly == "not_original_sender"


def test_correction_that_cannot_supersede_still_counts_on_its_own():
    record = fold_history(
        [_jpn_fraud("f1", at=1), _jpn_fraud("f2", K.FORGED, at=2, supersedes="zz")]
    )
    assert [n.notice_id for n in record.fraud] == ["f1", "f2"]
    assert _entry(record, "f2").anomaly == "superseded_notice_not_found"


def test_second_correction_of_the_same_notice_does_not_supersede_it_again():
    record = fold_history(
        [
            _notice("s1", K.STOLEN, at=1),
            _notice("s2", K.LOST, at=2, supersedes="s1"),
            _notice("s3", K.REVOKED, at=3, supersedes="s1"),
        ]
    )
    assert _entry(record, "s1").superseded_by == "s2"
    assert _entry(record, "s3").anomaly == "already_superseded"
    assert record.current_status is K.REVOKED


def test_withdrawal_without_target_and_duplicate_ids_are_marked():
    record = fold_history(
        [
            _notice("s1", K.STOLEN, at=1),
            _notice("s1", K.LOST, at=2),
            Notice("w1", "PHL-DFA", "PHL", K.WITHDRAWAL, PHL_DOC, 3),
        ]
    )
    assert record.current_status is K.STOLEN
    assert [e.anomaly for e in record.history] == [
        None,
        "duplicate_notice_id",
        "supersedes_required",
    ]


def test_record_is_named_by_the_most_specific_key():
    record = fold_history(
        [_notice("s1", K.STOLEN, document=DocumentKey("PHL", "", "P1234567A")), _jpn_fraud("f1")]
    )
    assert record.document == PHL_DOC


_STORY = [
    _notice("s1", K.STOLEN, at=1),
    _jpn_fraud("f1", at=2),
    _notice("s2", K.REVOKED, at=3),
    _notice("s3", K.INVALIDATED, at=4, supersedes="s2"),
    Notice("w1", "JPN-ISA", "JPN", K.WITHDRAWAL, PHL_DOC, 5, "f1"),
    _jpn_fraud("f2", K.IMPOSTOR, at=6),
    _notice("w2", K.WITHDRAWAL, at=7, supersedes="s1", node="PHL-OTHER"),
]


@settings(max_examples=100, deadline=None)
@given(st.permutations(_STORY))
def test_fold_does_not_depend_on_arrival_order(notices):
    assert fold_history(notices) == fold_history(_STORY)


def test_fold_accepts_kinds_given_as_string_values():
    withdrawal = Notice("w1", "PHL-DFA", "PHL", "WITHDRAWAL", PHL_DOC, 2, "s1")  # type: ignore[arg-type]
    record = fold_history([_notice("s1", K.STOLEN, at=1), withdrawal])
    assert record.current_status is None
    assert _entry(record, "s1").withdrawn


def test_spec_lists_exactly_the_codes_that_may_not_send_status_notices():
    """docs/protocol.md 16.1 names every non-state code; the code refuses exactly those."""
    import re
    from pathlib import Path

    from exchange_node.domain.icao import HISTORIC_CODES, INTERNATIONAL_CODES, STATE_CODES

    spec = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()
    rule = spec.split("### 16.1 ")[1].split("2. `document.issuing_state`")[0]
    refused = set(re.findall(r"`([A-Z]{3})`", rule.split("are\n   not;")[0].split("Part B")[1]))
    assert refused == INTERNATIONAL_CODES | HISTORIC_CODES
    assert not refused & STATE_CODES
    for code in refused:
        err = _error(
            ValidationError, check_notice_authority, K.STOLEN, code, DocumentKey(code, "P", "1")
        )
        assert err.code == "not_issuing_state"
