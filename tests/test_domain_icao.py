"""ICAO Doc 9303 codes: state codes, document types, document numbers."""

from __future__ import annotations

import pytest

from exchange_node.domain import icao
from exchange_node.domain.icao import (
    validate_document_number,
    validate_document_type,
    validate_state_code,
)
from exchange_node.errors import ValidationError

# Doc 9303 Part 3, Section 5, Parts B, C and D, every code.
SPECIAL_CODES = [
    "GBD", "GBN", "GBO", "GBP", "GBS", "UNO", "UNA", "UNK", "EUE",
    "XXA", "XXB", "XXC", "XXX",
    "XBA", "XIM", "XCC", "XCE", "XCO", "XEC", "XPO", "XES", "XMP", "XOM", "XDC",
]  # fmt: skip


def test_part_a_holds_every_iso_alpha3_code_with_germany_as_d():
    assert len(icao.STATE_CODES - icao.UNLISTED_CODES_IN_USE) == 249
    assert "D" in icao.STATE_CODES
    assert "DEU" not in icao.STATE_CODES


@pytest.mark.parametrize("code", SPECIAL_CODES)
def test_special_codes_are_accepted_and_are_not_states(code):
    assert validate_state_code(code, "f") == code
    assert not icao.is_state(code)


@pytest.mark.parametrize("raw", ["D", "D<<", "D<", "d", " d<< "])
def test_germany_is_normalised_to_d(raw):
    assert validate_state_code(raw, "f") == "D"


def test_codes_are_upper_cased_and_stripped():
    assert validate_state_code(" phl ", "f") == "PHL"


def test_deu_is_rejected_with_a_hint_to_use_d():
    with pytest.raises(ValidationError) as err:
        validate_state_code("DEU", "document.issuing_state")
    assert err.value.code == "invalid_state_code"
    assert err.value.field == "document.issuing_state"
    assert "'D'" in err.value.message


def test_unknown_code_is_rejected_naming_the_field():
    with pytest.raises(ValidationError) as err:
        validate_state_code("ZZZ", "node.country")
    assert (err.value.code, err.value.field) == ("invalid_state_code", "node.country")


@pytest.mark.parametrize("raw", ["", "AB1", "ABCD", "P<H", "<<<"])
def test_malformed_code_is_rejected(raw):
    with pytest.raises(ValidationError) as err:
        validate_state_code(raw, "f")
    assert err.value.code == "invalid_state_code"


def test_non_text_code_is_rejected():
    with pytest.raises(ValidationError) as err:
        validate_state_code(123, "f")  # type: ignore[arg-type]
    assert err.value.code == "invalid_state_code"


def test_specimen_state_is_rejected_unless_allowed():
    with pytest.raises(ValidationError) as err:
        validate_state_code("UTO", "f")
    assert err.value.code == "invalid_state_code"
    assert validate_state_code("UTO", "f", allow_specimen=True) == "UTO"


@pytest.mark.parametrize("code", ["ANT", "NTZ", "RKS"])
def test_historic_and_in_use_unlisted_codes_are_accepted(code):
    assert validate_state_code(code, "f") == code


def test_kosovo_rks_is_a_state_and_historic_codes_are_not():
    assert icao.is_state("RKS")
    assert not icao.is_state("ANT")


def test_state_name_gives_the_short_name():
    assert icao.state_name("D") == "Germany"
    assert icao.state_name("XOM") is not None
    assert icao.state_name("ZZZ") is None


# Document types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("P", "P"), ("P<", "P"), ("pd", "PD"), ("PO", "PO"), ("PS", "PS"), ("I", "I"),
     ("ID", "ID"), ("IR", "IR"), ("AC", "AC"), ("C<", "C"), ("V", "V"), ("VB", "VB")],
)  # fmt: skip
def test_document_types_are_accepted_in_canonical_form(raw, expected):
    assert validate_document_type(raw, "f") == expected


@pytest.mark.parametrize("raw", ["X", "B", "ZP"])
def test_document_type_must_start_with_p_a_c_i_or_v(raw):
    with pytest.raises(ValidationError) as err:
        validate_document_type(raw, "document.type")
    assert (err.value.code, err.value.field) == ("invalid_document_type", "document.type")


@pytest.mark.parametrize("raw", ["IV", "AV", "CV"])
def test_card_document_type_may_not_have_v_second(raw):
    with pytest.raises(ValidationError) as err:
        validate_document_type(raw, "f")
    assert err.value.code == "invalid_document_type"


@pytest.mark.parametrize("raw", ["", "PPP", "P1", "<P", None])
def test_malformed_document_type_is_rejected(raw):
    with pytest.raises(ValidationError) as err:
        validate_document_type(raw, "f")  # type: ignore[arg-type]
    assert err.value.code == "invalid_document_type"


# Document numbers --------------------------------------------------------------------------


def test_document_number_is_upper_cased_and_fillers_dropped():
    assert validate_document_number(" l898902c3<< ", "f") == "L898902C3"


def test_document_number_of_22_characters_is_accepted():
    assert validate_document_number("A" * 22, "f") == "A" * 22


def test_document_number_longer_than_22_is_rejected():
    with pytest.raises(ValidationError) as err:
        validate_document_number("A" * 23, "document.number")
    assert (err.value.code, err.value.field) == ("invalid_document_number", "document.number")
    assert "23" in err.value.message


@pytest.mark.parametrize("raw", ["", "   ", "<<<"])
def test_empty_document_number_is_rejected(raw):
    with pytest.raises(ValidationError) as err:
        validate_document_number(raw, "f")
    assert err.value.code == "invalid_document_number"


@pytest.mark.parametrize("raw", ["AB 123", "AB-123", "AB<123", "ÄB123"])
def test_document_number_with_other_characters_is_rejected_naming_the_character(raw):
    with pytest.raises(ValidationError) as err:
        validate_document_number(raw, "f")
    assert err.value.code == "invalid_document_number"
    assert "only letters A-Z and digits" in err.value.message


def test_non_text_document_number_is_rejected():
    with pytest.raises(ValidationError) as err:
        validate_document_number(12345, "f")  # type: ignore[arg-type]
    assert err.value.code == "invalid_document_number"
