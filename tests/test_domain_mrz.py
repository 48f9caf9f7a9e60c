"""MRZ parsing: the ICAO specimens, every check digit, every rejection."""

from __future__ import annotations

import json

import pytest

from exchange_node.domain.mrz import MrzFormat, MrzNames, check_digit, parse_mrz
from exchange_node.errors import ValidationError
from tests.vector_paths import ICAO_SPECIMENS

SPECIMENS = json.loads(ICAO_SPECIMENS.read_text())["specimens"]


def _ids(specimen: dict) -> str:
    return specimen["format"]


def _parse(lines: list[str]):
    return parse_mrz(lines, allow_specimen=True)


def _with_digit(data: str) -> str:
    return data + str(check_digit(data))


def _td3(
    *,
    doc_type: str = "P<",
    state: str = "UTO",
    names: str = "ERIKSSON<<ANNA<MARIA",
    number: str = "L898902C3",
    nationality: str = "UTO",
    birth: str = "740812",
    sex: str = "F",
    expiry: str = "120415",
    personal: str = "ZE184226B",
) -> list[str]:
    line1 = (doc_type + state + names).ljust(44, "<")
    personal_field = personal.ljust(14, "<")
    personal_part = _with_digit(personal_field) if personal else personal_field + "<"
    head = _with_digit(number.ljust(9, "<")) + nationality + _with_digit(birth) + sex
    body = head + _with_digit(expiry) + personal_part
    composite = body[0:10] + body[13:20] + body[21:43]
    return [line1, body + str(check_digit(composite))]


def _td1(number: str, optional1: str = "", optional2: str = "") -> list[str]:
    if len(number) <= 9:
        number_part = _with_digit(number.ljust(9, "<")) + optional1
    else:
        number_part = number[:9] + "<" + number[9:] + str(check_digit(number)) + "<" + optional1
    line1 = ("I<UTO" + number_part).ljust(30, "<")
    line2 = _with_digit("740812") + "F" + _with_digit("120415") + "UTO"
    line2 += optional2.ljust(11, "<")
    line2 += str(check_digit(line1[5:30] + line2[0:7] + line2[8:15] + line2[18:29]))
    return [line1, line2, "ERIKSSON<<ANNA<MARIA".ljust(30, "<")]


def _flip(line: str, position: int) -> str:
    """Change one character so that its check digit value changes.

    A digit becomes the next digit and a letter the next letter (a difference of 1, or 25
    for Z), and a filler becomes '1': differences no weight 7, 3 or 1 can cancel mod 10.
    """
    char = line[position]
    if char.isdigit():
        new = str((int(char) + 1) % 10)
    elif char == "<":
        new = "1"
    else:
        new = "A" if char == "Z" else chr(ord(char) + 1)
    return line[:position] + new + line[position + 1 :]


# The specimens -----------------------------------------------------------------------------


@pytest.mark.parametrize("specimen", SPECIMENS, ids=_ids)
def test_specimen_parses_with_the_fields_the_vector_gives(specimen):
    mrz = _parse(specimen["lines"])
    assert mrz.format == MrzFormat(specimen["format"])
    assert mrz.document_type == specimen["document_code"]
    assert mrz.issuing_state == specimen["issuing_state"]
    assert mrz.document_number == specimen["document_number"]
    assert mrz.nationality == specimen["nationality"]
    assert mrz.birth_date == specimen["birth_date"]
    assert mrz.sex == specimen["sex"]
    assert mrz.expiry_date == specimen["expiry_date"]
    assert mrz.optional_data == specimen.get("optional_data", "")
    assert mrz.names == MrzNames(specimen["primary_identifier"], specimen["secondary_identifier"])


@pytest.mark.parametrize("specimen", SPECIMENS, ids=_ids)
def test_specimen_given_as_one_string_with_line_breaks_parses(specimen):
    text = "\r\n".join(specimen["lines"]) + "\n"
    assert parse_mrz(text, allow_specimen=True) == _parse(specimen["lines"])


@pytest.mark.parametrize("specimen", SPECIMENS, ids=_ids)
def test_specimen_is_rejected_without_allow_specimen(specimen):
    with pytest.raises(ValidationError) as err:
        parse_mrz(specimen["lines"])
    assert (err.value.code, err.value.field) == ("invalid_state_code", "mrz.issuing_state")


def test_check_digit_of_specimen_fields():
    assert check_digit("L898902C3") == 6
    assert check_digit("740812") == 2
    assert check_digit("<<<<<<") == 0


def test_check_digit_refuses_characters_outside_the_mrz_set():
    with pytest.raises(ValueError):
        check_digit("a")


# One changed character, caught by the check digit that covers it ---------------------------

# (format, line index, positions, field named by the error)
_CHECKED = {
    "TD3": [
        (1, range(0, 10), "mrz.document_number"),
        (1, range(13, 20), "mrz.birth_date"),
        (1, range(21, 28), "mrz.expiry_date"),
        (1, range(28, 43), "mrz.optional_data"),
        (1, range(43, 44), "mrz.composite"),
    ],
    "TD2": [
        (1, range(0, 10), "mrz.document_number"),
        (1, range(13, 20), "mrz.birth_date"),
        (1, range(21, 28), "mrz.expiry_date"),
        (1, range(28, 36), "mrz.composite"),
    ],
    "TD1": [
        (0, range(5, 15), "mrz.document_number"),
        (0, range(15, 30), "mrz.composite"),
        (1, range(0, 7), "mrz.birth_date"),
        (1, range(8, 15), "mrz.expiry_date"),
        (1, range(18, 30), "mrz.composite"),
    ],
}
_FLIPS = [
    pytest.param(
        specimen, line, position, field, id=f"{specimen['format']}-l{line + 1}-p{position + 1}"
    )
    for specimen in SPECIMENS
    for line, positions, field in _CHECKED[specimen["format"]]
    for position in positions
]


@pytest.mark.parametrize(("specimen", "line", "position", "field"), _FLIPS)
def test_one_changed_character_fails_the_check_digit_of_its_field(specimen, line, position, field):
    lines = list(specimen["lines"])
    lines[line] = _flip(lines[line], position)
    with pytest.raises(ValidationError) as err:
        _parse(lines)
    assert (err.value.code, err.value.field) == ("mrz_check_digit", field)


def test_check_digit_error_says_what_was_found_and_expected():
    lines = list(SPECIMENS[0]["lines"])
    lines[1] = "L898902C3" + "3" + lines[1][10:]
    with pytest.raises(ValidationError) as err:
        _parse(lines)
    assert err.value.message == "check digit for document number is 3, expected 6"


# Layout errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 4])
def test_wrong_number_of_lines_is_rejected(count):
    with pytest.raises(ValidationError) as err:
        _parse(["<" * 44] * count)
    assert (err.value.code, err.value.field) == ("mrz_line_count", "mrz")


def test_two_lines_of_unknown_length_are_rejected_naming_line_one():
    with pytest.raises(ValidationError) as err:
        _parse(["<" * 40, "<" * 40])
    assert (err.value.code, err.value.field) == ("mrz_line_length", "mrz.line1")


def test_short_second_line_is_rejected_naming_it():
    lines = SPECIMENS[0]["lines"]
    with pytest.raises(ValidationError) as err:
        _parse([lines[0], lines[1][:-1]])
    assert (err.value.code, err.value.field) == ("mrz_line_length", "mrz.line2")
    assert "43" in err.value.message


def test_short_td1_third_line_is_rejected_naming_it():
    lines = next(s["lines"] for s in SPECIMENS if s["format"] == "TD1")
    with pytest.raises(ValidationError) as err:
        _parse([lines[0], lines[1], lines[2][:29]])
    assert (err.value.code, err.value.field) == ("mrz_line_length", "mrz.line3")


def test_lower_case_character_is_rejected_with_its_position():
    lines = list(SPECIMENS[0]["lines"])
    lines[0] = lines[0][:5] + "e" + lines[0][6:]
    with pytest.raises(ValidationError) as err:
        _parse(lines)
    assert (err.value.code, err.value.field) == ("mrz_bad_character", "mrz.line1")
    assert "position 6" in err.value.message


# Field rules -------------------------------------------------------------------------------


def test_germany_written_d_fillers_parses_as_d():
    mrz = parse_mrz(_td3(state="D<<", nationality="D<<"))
    assert (mrz.issuing_state, mrz.nationality) == ("D", "D")


def test_unknown_nationality_is_rejected_naming_nationality():
    with pytest.raises(ValidationError) as err:
        _parse(_td3(nationality="ZZZ"))
    assert (err.value.code, err.value.field) == ("invalid_state_code", "mrz.nationality")


def test_stateless_holder_nationality_xxa_is_accepted():
    assert _parse(_td3(nationality="XXA")).nationality == "XXA"


def test_passport_mrz_with_a_card_document_code_is_rejected():
    with pytest.raises(ValidationError) as err:
        _parse(_td3(doc_type="I<"))
    assert (err.value.code, err.value.field) == ("invalid_document_type", "mrz.document_type")


def test_diplomatic_passport_type_is_kept():
    assert _parse(_td3(doc_type="PD")).document_type == "PD"


def test_unspecified_sex_filler_reads_as_x():
    assert _parse(_td3(sex="<")).sex == "X"


def test_other_sex_character_is_rejected():
    with pytest.raises(ValidationError) as err:
        _parse(_td3(sex="Q"))
    assert (err.value.code, err.value.field) == ("mrz_bad_sex", "mrz.sex")


def test_unknown_parts_of_birth_date_are_kept_as_fillers():
    assert _parse(_td3(birth="74<<<<")).birth_date == "74<<<<"


@pytest.mark.parametrize(("birth", "why"), [("741312", "month 13"), ("740230", "day 30"),
                                            ("740800", "day 00"), ("7408A2", "YYMMDD")])  # fmt: skip
def test_impossible_birth_date_is_rejected(birth, why):
    with pytest.raises(ValidationError) as err:
        _parse(_td3(birth=birth))
    assert (err.value.code, err.value.field) == ("mrz_bad_date", "mrz.birth_date")
    assert why in err.value.message


def test_expiry_date_may_not_be_unknown():
    with pytest.raises(ValidationError) as err:
        _parse(_td3(expiry="12<<<<"))
    assert (err.value.code, err.value.field) == ("mrz_bad_date", "mrz.expiry_date")


def test_february_29_is_accepted_because_the_century_is_unknown():
    assert _parse(_td3(birth="000229")).birth_date == "000229"


def test_unused_personal_number_may_carry_a_filler_check_digit():
    mrz = _parse(_td3(personal=""))
    assert mrz.optional_data == ""


def test_short_document_number_drops_its_fillers():
    assert _parse(_td3(number="X12345")).document_number == "X12345"


# TD1 long document numbers (Doc 9303 Part 5, 4.2.4 note j) ---------------------------------


def test_td1_long_document_number_as_in_the_doc_9303_example():
    line1 = "I<UTOD23145890<7349<<<<<<<<<<<"
    line2 = "3407127M9507122UTO<<<<<<<<<<<"
    line2 += str(check_digit(line1[5:30] + line2[0:7] + line2[8:15] + line2[18:29]))
    mrz = _parse([line1, line2, "STEVENSON<<PETER<JOHN<<<<<<<<<"])
    assert mrz.document_number == "D23145890734"
    assert mrz.optional_data == ""


def test_td1_long_document_number_continues_in_the_optional_data():
    mrz = _parse(_td1("D23145890734", optional1="AB"))
    assert mrz.document_number == "D23145890734"
    assert mrz.optional_data == "AB"


def test_td1_long_document_number_of_22_characters_is_read_whole():
    number = "ABCDEFGHJ" + "1234567890123"
    assert _parse(_td1(number)).document_number == number


def test_td1_long_document_number_check_digit_covers_the_whole_number():
    lines = _td1("D23145890734")
    lines[0] = _flip(lines[0], 16)  # a character of the overflow part
    with pytest.raises(ValidationError) as err:
        _parse(lines)
    assert (err.value.code, err.value.field) == ("mrz_check_digit", "mrz.document_number")


def test_td1_filler_check_digit_without_overflow_is_a_check_digit_error():
    lines = _td1("D23145890")
    lines[0] = lines[0][:14] + "<" + lines[0][15:]
    with pytest.raises(ValidationError) as err:
        _parse(lines)
    assert (err.value.code, err.value.field) == ("mrz_check_digit", "mrz.document_number")


def test_td1_second_optional_data_is_returned():
    assert _parse(_td1("D23145890", optional2="XY12")).optional_data_2 == "XY12"


# Visas (Doc 9303 Part 7) -------------------------------------------------------------------


def _visa(width: int, optional: str = "6ZE184226B") -> list[str]:
    line1 = "V<UTOERIKSSON<<ANNA<MARIA".ljust(width, "<")
    line2 = _with_digit("L8988901C") + "XXX" + _with_digit("400907") + "F"
    line2 = (line2 + _with_digit("961210") + optional).ljust(width, "<")
    return [line1, line2]


@pytest.mark.parametrize(
    ("width", "fmt", "optional"),
    [(44, MrzFormat.MRV_A, "6ZE184226B<<<1A"), (36, MrzFormat.MRV_B, "6ZE18422")],
)
def test_visa_parses_without_a_composite_check_digit(width, fmt, optional):
    mrz = _parse(_visa(width, optional))
    assert (mrz.format, mrz.document_type, mrz.document_number) == (fmt, "V", "L8988901C")
    assert mrz.optional_data == optional


def test_visa_document_number_check_digit_is_verified():
    lines = _visa(44)
    lines[1] = _flip(lines[1], 3)
    with pytest.raises(ValidationError) as err:
        _parse(lines)
    assert (err.value.code, err.value.field) == ("mrz_check_digit", "mrz.document_number")
