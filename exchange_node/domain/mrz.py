"""Machine readable zone (MRZ) parsing with every check digit verified.

Formats (ICAO Doc 9303): TD1 (3 lines of 30, Part 5), TD2 (2 x 36, Part 6), TD3 passports
(2 x 44, Part 4), and the visas MRV-A (2 x 44) and MRV-B (2 x 36) of Part 7, told apart from
TD3/TD2 by the document code starting with V.

Check digits (Part 3, 4.9): characters are valued 0-9 for digits, 10-35 for A-Z, 0 for the
filler ``<``; weights 7, 3, 1 repeat from the left; the check digit is the sum modulo 10.
The parser verifies, in this order, the check digits of the document number, date of birth,
date of expiry, the TD3 personal number and the composite check digit, so that a misread
character is reported against the first field whose check digit covers it.

Nothing here guesses: an MRZ that does not parse exactly raises ``ValidationError`` with
the field at fault (``mrz.document_number``, ``mrz.composite``, ``mrz.line2`` and so on).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from exchange_node.domain.icao import (
    validate_document_number,
    validate_document_type,
    validate_state_code,
)
from exchange_node.errors import ValidationError

__all__ = ["Mrz", "MrzFormat", "MrzNames", "check_digit", "parse_mrz"]


class MrzFormat(StrEnum):
    TD1 = "TD1"
    TD2 = "TD2"
    TD3 = "TD3"
    MRV_A = "MRV-A"
    MRV_B = "MRV-B"


@dataclass(frozen=True, slots=True)
class MrzNames:
    """The holder's name as written in the MRZ, fillers turned into single spaces.

    ``primary`` is the primary identifier (usually the surname), ``secondary`` the given
    names; ``secondary`` is empty when the MRZ has no ``<<`` separator. Names may be
    truncated by the issuer to fit the field; nothing here can tell.
    """

    primary: str
    secondary: str


@dataclass(frozen=True, slots=True)
class Mrz:
    """A parsed MRZ whose check digits all verified.

    Dates are kept as written, ``YYMMDD``: the century is not in the MRZ and depends on
    what the date is (a birth date or an expiry date) and on today, which a caller knows
    and this module does not. In ``birth_date`` an unknown part is ``<<`` (Part 3, 4.8).
    ``sex`` is ``F``, ``M`` or ``X`` (unspecified, ``<`` in the MRZ).
    ``optional_data_2`` is only used by TD1 (line 2); the TD3 personal number is
    ``optional_data``. Trailing fillers are removed from optional data.
    """

    format: MrzFormat
    document_type: str
    issuing_state: str
    document_number: str
    names: MrzNames
    nationality: str
    birth_date: str
    sex: str
    expiry_date: str
    optional_data: str
    optional_data_2: str = ""


_VALUES = {c: i for i, c in enumerate("0123456789")}
_VALUES.update({c: 10 + i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ")})
_VALUES["<"] = 0
_WEIGHTS = (7, 3, 1)
_MRZ_LINE = re.compile(r"[A-Z0-9<]*")


def check_digit(data: str) -> int:
    """The Doc 9303 check digit of ``data`` (characters A-Z, 0-9 and ``<`` only).

    Raises ``ValueError`` for any other character: callers validate characters first.
    """
    total = 0
    for i, char in enumerate(data):
        try:
            total += _VALUES[char] * _WEIGHTS[i % 3]
        except KeyError:
            raise ValueError(f"{char!r} has no check digit value") from None
    return total % 10


def parse_mrz(lines: Sequence[str] | str, *, allow_specimen: bool = False) -> Mrz:
    """Parse and verify an MRZ given as its lines (or one string with line breaks).

    White space around each line is ignored; characters inside must be A-Z, 0-9 or ``<``.
    ``allow_specimen`` admits the fictitious issuing state ``UTO`` of the ICAO specimens.

    Raises ``ValidationError`` with code ``mrz_line_count``, ``mrz_line_length``,
    ``mrz_bad_character``, ``mrz_check_digit``, ``mrz_bad_date``, ``mrz_bad_sex``,
    ``invalid_document_type``, ``invalid_state_code`` or ``invalid_document_number``.
    """
    if isinstance(lines, str):
        lines = lines.strip().splitlines()
    rows = [line.strip() for line in lines if line.strip()]
    fmt = _detect_format(rows)
    for index, row in enumerate(rows, start=1):
        if not _MRZ_LINE.fullmatch(row):
            position, char = next((p, c) for p, c in enumerate(row, 1) if c not in _VALUES)
            raise ValidationError(
                "mrz_bad_character",
                f"line {index} position {position} holds {char!r}; an MRZ contains only "
                "A-Z, 0-9 and '<'",
                f"mrz.line{index}",
            )
    if fmt is MrzFormat.TD1:
        return _parse_td1(rows, allow_specimen)
    return _parse_two_line(rows, fmt, allow_specimen)


def _detect_format(rows: list[str]) -> MrzFormat:
    if len(rows) == 3:
        expected, fmt = 30, MrzFormat.TD1
    elif len(rows) == 2:
        first = len(rows[0])
        if first == 44:
            expected = 44
            fmt = MrzFormat.MRV_A if rows[0].startswith("V") else MrzFormat.TD3
        elif first == 36:
            expected = 36
            fmt = MrzFormat.MRV_B if rows[0].startswith("V") else MrzFormat.TD2
        else:
            raise ValidationError(
                "mrz_line_length",
                f"line 1 has {first} characters; a two-line MRZ has 36 (TD2, MRV-B) or "
                "44 (TD3, MRV-A)",
                "mrz.line1",
            )
    else:
        raise ValidationError(
            "mrz_line_count",
            f"got {len(rows)} lines; an MRZ has 3 lines (TD1) or 2 lines (TD2, TD3, visas)",
            "mrz",
        )
    for index, row in enumerate(rows, start=1):
        if len(row) != expected:
            raise ValidationError(
                "mrz_line_length",
                f"line {index} has {len(row)} characters; a {fmt} MRZ has {expected} per line",
                f"mrz.line{index}",
            )
    return fmt


def _verify(data: str, digit: str, label: str, field: str) -> None:
    expected = check_digit(data)
    if digit != str(expected):
        raise ValidationError(
            "mrz_check_digit", f"check digit for {label} is {digit}, expected {expected}", field
        )


def _document_number(principal: str, digit: str, optional: str) -> tuple[str, str, str]:
    """Resolve the TD1/TD2 long number overflow (Doc 9303 Part 5, 4.2.4 note j).

    When the check digit position holds a filler, the number continues in the optional
    data, followed by its check digit and a filler. Returns (number as written, its check
    digit, the optional data left over).
    """
    if digit != "<" or "<" in principal:
        return principal, digit, optional
    end = optional.find("<")
    overflow = optional if end < 0 else optional[:end]
    if len(overflow) < 2:
        # Nothing continues the number: report the filler check digit as it stands.
        return principal, digit, optional
    rest = optional[len(overflow) + 1 :] if end >= 0 else ""
    return principal + overflow[:-1], overflow[-1], rest


def _parse_td1(rows: list[str], allow_specimen: bool) -> Mrz:
    line1, line2, line3 = rows
    number, number_digit, optional1 = _document_number(line1[5:14], line1[14], line1[15:30])
    _verify(number, number_digit, "document number", "mrz.document_number")
    _verify(line2[0:6], line2[6], "date of birth", "mrz.birth_date")
    _verify(line2[8:14], line2[14], "date of expiry", "mrz.expiry_date")
    composite = line1[5:30] + line2[0:7] + line2[8:15] + line2[18:29]
    _verify(composite, line2[29], "the composite (upper and middle lines)", "mrz.composite")
    document_type = _document_type(line1[0:2], "AIC", MrzFormat.TD1)
    return Mrz(
        format=MrzFormat.TD1,
        document_type=document_type,
        issuing_state=validate_state_code(
            line1[2:5], "mrz.issuing_state", allow_specimen=allow_specimen
        ),
        document_number=validate_document_number(number, "mrz.document_number"),
        names=_names(line3),
        nationality=validate_state_code(
            line2[15:18], "mrz.nationality", allow_specimen=allow_specimen
        ),
        birth_date=_date(line2[0:6], "mrz.birth_date", unknown_allowed=True),
        sex=_sex(line2[7]),
        expiry_date=_date(line2[8:14], "mrz.expiry_date", unknown_allowed=False),
        optional_data=optional1.rstrip("<"),
        optional_data_2=line2[18:29].rstrip("<"),
    )


def _parse_two_line(rows: list[str], fmt: MrzFormat, allow_specimen: bool) -> Mrz:
    line1, line2 = rows
    width = len(line2)
    if fmt is MrzFormat.TD2:
        number, number_digit, optional = _document_number(line2[0:9], line2[9], line2[28:35])
    elif fmt is MrzFormat.TD3:
        number, number_digit, optional = line2[0:9], line2[9], line2[28:42]
    else:  # visas: optional data runs to the end of the line, no composite digit
        number, number_digit, optional = line2[0:9], line2[9], line2[28:width]
    _verify(number, number_digit, "document number", "mrz.document_number")
    _verify(line2[13:19], line2[19], "date of birth", "mrz.birth_date")
    _verify(line2[21:27], line2[27], "date of expiry", "mrz.expiry_date")
    if fmt is MrzFormat.TD3:
        personal, personal_digit = line2[28:42], line2[42]
        # An unused personal number may carry a filler as its check digit (Part 4, 4.2.2).
        if not (personal_digit == "<" and personal == "<" * 14):
            _verify(personal, personal_digit, "personal number", "mrz.optional_data")
        _verify(
            line2[0:10] + line2[13:20] + line2[21:43], line2[43], "the composite", "mrz.composite"
        )
    elif fmt is MrzFormat.TD2:
        _verify(
            line2[0:10] + line2[13:20] + line2[21:35], line2[35], "the composite", "mrz.composite"
        )
    allowed_first = {
        MrzFormat.TD3: "P",
        MrzFormat.TD2: "AIC",
        MrzFormat.MRV_A: "V",
        MrzFormat.MRV_B: "V",
    }[fmt]
    return Mrz(
        format=fmt,
        document_type=_document_type(line1[0:2], allowed_first, fmt),
        issuing_state=validate_state_code(
            line1[2:5], "mrz.issuing_state", allow_specimen=allow_specimen
        ),
        document_number=validate_document_number(number, "mrz.document_number"),
        names=_names(line1[5:]),
        nationality=validate_state_code(
            line2[10:13], "mrz.nationality", allow_specimen=allow_specimen
        ),
        birth_date=_date(line2[13:19], "mrz.birth_date", unknown_allowed=True),
        sex=_sex(line2[20]),
        expiry_date=_date(line2[21:27], "mrz.expiry_date", unknown_allowed=False),
        optional_data=optional.rstrip("<"),
    )


def _document_type(raw: str, allowed_first: str, fmt: MrzFormat) -> str:
    code = validate_document_type(raw, "mrz.document_type")
    if code[0] not in allowed_first:
        raise ValidationError(
            "invalid_document_type",
            f"document type {code!r} does not fit a {fmt} MRZ, whose document code starts "
            f"with {' or '.join(allowed_first)}",
            "mrz.document_type",
        )
    return code


def _names(field: str) -> MrzNames:
    primary, _, secondary = field.rstrip("<").partition("<<")
    return MrzNames(
        primary=" ".join(part for part in primary.split("<") if part),
        secondary=" ".join(part for part in secondary.split("<") if part),
    )


_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # 29: the century is unknown


def _date(value: str, field: str, *, unknown_allowed: bool) -> str:
    parts = (value[0:2], value[2:4], value[4:6])
    for part in parts:
        if part == "<<" and unknown_allowed:
            continue
        if not part.isdigit():
            raise ValidationError(
                "mrz_bad_date",
                f"{value!r} is not a date YYMMDD"
                + (" (unknown parts written '<<')" if unknown_allowed else ""),
                field,
            )
    month, day = parts[1], parts[2]
    if month.isdigit() and not 1 <= int(month) <= 12:
        raise ValidationError("mrz_bad_date", f"{value!r} has month {month}", field)
    if day.isdigit():
        limit = _DAYS_IN_MONTH[int(month) - 1] if month.isdigit() else 31
        if not 1 <= int(day) <= limit:
            raise ValidationError("mrz_bad_date", f"{value!r} has day {day}", field)
    return value


def _sex(char: str) -> str:
    if char in ("F", "M"):
        return char
    if char == "<":
        return "X"
    raise ValidationError(
        "mrz_bad_sex", f"sex is {char!r}; the MRZ allows F, M or '<' (unspecified)", "mrz.sex"
    )
