"""ICAO Doc 9303 codes: issuing states and nationalities, document types, document numbers.

Source: ICAO Doc 9303, Machine Readable Travel Documents, Part 3 "Specifications Common to
all MRTDs", Section 5 "Codes for nationality, place of birth, location of issuing
State/authority and other purposes", which has four parts:

- Part A, letter codes: ISO 3166-1 alpha-3, except that Germany is ``D`` (written ``D<<`` in
  a three-character MRZ field);
- Part B, other codes reserved by the ISO 3166 maintenance agency: the British nationality
  statuses GBD, GBN, GBO, GBP, GBS, the United Nations codes UNO, UNA, UNK and the European
  Union's EUE;
- Part C, persons without a defined nationality: XXA, XXB, XXC, XXX;
- Part D, other issuing authorities: XBA, XIM, XCC, XCE, XCO, XEC, XPO, XES, XMP, XOM, XDC.

Document type codes follow Part 4 (MRPs, ``P``), Parts 5 and 6 (TD1/TD2 cards, ``A``, ``C``,
``I``) and Part 7 (visas, ``V``). Document numbers follow Parts 4 to 6; the long number
overflow of TD1 is Part 5, 4.2.4 note j.

The code tables are data, kept here and nowhere else. A change to them is a change to what
the network accepts, so it goes through review like code.
"""

from __future__ import annotations

import re
from types import MappingProxyType

from exchange_node.errors import ValidationError

__all__ = [
    "GERMANY",
    "HISTORIC_CODES",
    "INTERNATIONAL_CODES",
    "MAX_DOCUMENT_NUMBER_LENGTH",
    "SPECIMEN_CODE",
    "STATE_CODES",
    "UNLISTED_CODES_IN_USE",
    "is_state",
    "state_name",
    "validate_document_number",
    "validate_document_type",
    "validate_state_code",
]

# Germany alone uses a one-letter code in Doc 9303 (Part 3, 5, Part A); in a three-character
# MRZ field it is padded with fillers: ``D<<``.
GERMANY = "D"

# Part A: ISO 3166-1 alpha-3, with ``D`` in place of DEU.
_STATES: dict[str, str] = {
    "ABW": "Aruba",
    "AFG": "Afghanistan",
    "AGO": "Angola",
    "AIA": "Anguilla",
    "ALA": "Åland Islands",
    "ALB": "Albania",
    "AND": "Andorra",
    "ARE": "United Arab Emirates",
    "ARG": "Argentina",
    "ARM": "Armenia",
    "ASM": "American Samoa",
    "ATA": "Antarctica",
    "ATF": "French Southern Territories",
    "ATG": "Antigua and Barbuda",
    "AUS": "Australia",
    "AUT": "Austria",
    "AZE": "Azerbaijan",
    "BDI": "Burundi",
    "BEL": "Belgium",
    "BEN": "Benin",
    "BES": "Bonaire, Sint Eustatius and Saba",
    "BFA": "Burkina Faso",
    "BGD": "Bangladesh",
    "BGR": "Bulgaria",
    "BHR": "Bahrain",
    "BHS": "Bahamas",
    "BIH": "Bosnia and Herzegovina",
    "BLM": "Saint Barthélemy",
    "BLR": "Belarus",
    "BLZ": "Belize",
    "BMU": "Bermuda",
    "BOL": "Bolivia",
    "BRA": "Brazil",
    "BRB": "Barbados",
    "BRN": "Brunei Darussalam",
    "BTN": "Bhutan",
    "BVT": "Bouvet Island",
    "BWA": "Botswana",
    "CAF": "Central African Republic",
    "CAN": "Canada",
    "CCK": "Cocos (Keeling) Islands",
    "CHE": "Switzerland",
    "CHL": "Chile",
    "CHN": "China",
    "CIV": "Côte d'Ivoire",
    "CMR": "Cameroon",
    "COD": "Congo, Democratic Republic of the",
    "COG": "Congo",
    "COK": "Cook Islands",
    "COL": "Colombia",
    "COM": "Comoros",
    "CPV": "Cabo Verde",
    "CRI": "Costa Rica",
    "CUB": "Cuba",
    "CUW": "Curaçao",
    "CXR": "Christmas Island",
    "CYM": "Cayman Islands",
    "CYP": "Cyprus",
    "CZE": "Czechia",
    GERMANY: "Germany",
    "DJI": "Djibouti",
    "DMA": "Dominica",
    "DNK": "Denmark",
    "DOM": "Dominican Republic",
    "DZA": "Algeria",
    "ECU": "Ecuador",
    "EGY": "Egypt",
    "ERI": "Eritrea",
    "ESH": "Western Sahara",
    "ESP": "Spain",
    "EST": "Estonia",
    "ETH": "Ethiopia",
    "FIN": "Finland",
    "FJI": "Fiji",
    "FLK": "Falkland Islands (Malvinas)",
    "FRA": "France",
    "FRO": "Faroe Islands",
    "FSM": "Micronesia, Federated States of",
    "GAB": "Gabon",
    "GBR": "United Kingdom of Great Britain and Northern Ireland",
    "GEO": "Georgia",
    "GGY": "Guernsey",
    "GHA": "Ghana",
    "GIB": "Gibraltar",
    "GIN": "Guinea",
    "GLP": "Guadeloupe",
    "GMB": "Gambia",
    "GNB": "Guinea-Bissau",
    "GNQ": "Equatorial Guinea",
    "GRC": "Greece",
    "GRD": "Grenada",
    "GRL": "Greenland",
    "GTM": "Guatemala",
    "GUF": "French Guiana",
    "GUM": "Guam",
    "GUY": "Guyana",
    "HKG": "Hong Kong (SAR of China)",
    "HMD": "Heard Island and McDonald Islands",
    "HND": "Honduras",
    "HRV": "Croatia",
    "HTI": "Haiti",
    "HUN": "Hungary",
    "IDN": "Indonesia",
    "IMN": "Isle of Man",
    "IND": "India",
    "IOT": "British Indian Ocean Territory",
    "IRL": "Ireland",
    "IRN": "Iran, Islamic Republic of",
    "IRQ": "Iraq",
    "ISL": "Iceland",
    "ISR": "Israel",
    "ITA": "Italy",
    "JAM": "Jamaica",
    "JEY": "Jersey",
    "JOR": "Jordan",
    "JPN": "Japan",
    "KAZ": "Kazakhstan",
    "KEN": "Kenya",
    "KGZ": "Kyrgyzstan",
    "KHM": "Cambodia",
    "KIR": "Kiribati",
    "KNA": "Saint Kitts and Nevis",
    "KOR": "Korea, Republic of",
    "KWT": "Kuwait",
    "LAO": "Lao People's Democratic Republic",
    "LBN": "Lebanon",
    "LBR": "Liberia",
    "LBY": "Libya",
    "LCA": "Saint Lucia",
    "LIE": "Liechtenstein",
    "LKA": "Sri Lanka",
    "LSO": "Lesotho",
    "LTU": "Lithuania",
    "LUX": "Luxembourg",
    "LVA": "Latvia",
    "MAC": "Macao (SAR of China)",
    "MAF": "Saint Martin (French part)",
    "MAR": "Morocco",
    "MCO": "Monaco",
    "MDA": "Moldova, Republic of",
    "MDG": "Madagascar",
    "MDV": "Maldives",
    "MEX": "Mexico",
    "MHL": "Marshall Islands",
    "MKD": "North Macedonia",
    "MLI": "Mali",
    "MLT": "Malta",
    "MMR": "Myanmar",
    "MNE": "Montenegro",
    "MNG": "Mongolia",
    "MNP": "Northern Mariana Islands",
    "MOZ": "Mozambique",
    "MRT": "Mauritania",
    "MSR": "Montserrat",
    "MTQ": "Martinique",
    "MUS": "Mauritius",
    "MWI": "Malawi",
    "MYS": "Malaysia",
    "MYT": "Mayotte",
    "NAM": "Namibia",
    "NCL": "New Caledonia",
    "NER": "Niger",
    "NFK": "Norfolk Island",
    "NGA": "Nigeria",
    "NIC": "Nicaragua",
    "NIU": "Niue",
    "NLD": "Netherlands",
    "NOR": "Norway",
    "NPL": "Nepal",
    "NRU": "Nauru",
    "NZL": "New Zealand",
    "OMN": "Oman",
    "PAK": "Pakistan",
    "PAN": "Panama",
    "PCN": "Pitcairn",
    "PER": "Peru",
    "PHL": "Philippines",
    "PLW": "Palau",
    "PNG": "Papua New Guinea",
    "POL": "Poland",
    "PRI": "Puerto Rico",
    "PRK": "Korea, Democratic People's Republic of",
    "PRT": "Portugal",
    "PRY": "Paraguay",
    "PSE": "Palestine, State of",
    "PYF": "French Polynesia",
    "QAT": "Qatar",
    "REU": "Réunion",
    "ROU": "Romania",
    "RUS": "Russian Federation",
    "RWA": "Rwanda",
    "SAU": "Saudi Arabia",
    "SDN": "Sudan",
    "SEN": "Senegal",
    "SGP": "Singapore",
    "SGS": "South Georgia and the South Sandwich Islands",
    "SHN": "Saint Helena, Ascension and Tristan da Cunha",
    "SJM": "Svalbard and Jan Mayen",
    "SLB": "Solomon Islands",
    "SLE": "Sierra Leone",
    "SLV": "El Salvador",
    "SMR": "San Marino",
    "SOM": "Somalia",
    "SPM": "Saint Pierre and Miquelon",
    "SRB": "Serbia",
    "SSD": "South Sudan",
    "STP": "Sao Tome and Principe",
    "SUR": "Suriname",
    "SVK": "Slovakia",
    "SVN": "Slovenia",
    "SWE": "Sweden",
    "SWZ": "Eswatini",
    "SXM": "Sint Maarten (Dutch part)",
    "SYC": "Seychelles",
    "SYR": "Syrian Arab Republic",
    "TCA": "Turks and Caicos Islands",
    "TCD": "Chad",
    "TGO": "Togo",
    "THA": "Thailand",
    "TJK": "Tajikistan",
    "TKL": "Tokelau",
    "TKM": "Turkmenistan",
    "TLS": "Timor-Leste",
    "TON": "Tonga",
    "TTO": "Trinidad and Tobago",
    "TUN": "Tunisia",
    "TUR": "Türkiye",
    "TUV": "Tuvalu",
    "TWN": "Taiwan",
    "TZA": "Tanzania, United Republic of",
    "UGA": "Uganda",
    "UKR": "Ukraine",
    "UMI": "United States Minor Outlying Islands",
    "URY": "Uruguay",
    "USA": "United States of America",
    "UZB": "Uzbekistan",
    "VAT": "Holy See",
    "VCT": "Saint Vincent and the Grenadines",
    "VEN": "Venezuela",
    "VGB": "Virgin Islands (British)",
    "VIR": "Virgin Islands (U.S.)",
    "VNM": "Viet Nam",
    "VUT": "Vanuatu",
    "WLF": "Wallis and Futuna",
    "WSM": "Samoa",
    "YEM": "Yemen",
    "ZAF": "South Africa",
    "ZMB": "Zambia",
    "ZWE": "Zimbabwe",
}

# Parts B, C and D: codes that are not a state. Documents may carry them as nationality
# (all of them) or as issuing authority (the organisations), but a node with one of these
# codes speaks for an organisation or a status, never for a state.
_INTERNATIONAL: dict[str, str] = {
    # Part B: other codes reserved by the ISO 3166 maintenance agency.
    "EUE": "European Union (EU)",
    "GBD": "British Overseas Territories Citizen",
    "GBN": "British National (Overseas)",
    "GBO": "British Overseas Citizen",
    "GBP": "British Protected Person",
    "GBS": "British Subject",
    "UNA": "Specialized agency of the United Nations or one of its officials",
    "UNK": "Resident of Kosovo with a travel document issued by UNMIK",
    "UNO": "United Nations Organization or one of its officials",
    # Part C: persons without a defined nationality.
    "XXA": "Stateless person (1954 Convention relating to the Status of Stateless Persons)",
    "XXB": "Refugee (1951 Convention relating to the Status of Refugees, 1967 Protocol)",
    "XXC": "Refugee other than under XXB",
    "XXX": "Person of unspecified nationality",
    # Part D: other issuing authorities.
    "XBA": "African Development Bank (AfDB)",
    "XCC": "Caribbean Community or one of its emissaries (CARICOM)",
    "XCE": "Council of Europe",
    "XCO": "Common Market for Eastern and Southern Africa (COMESA)",
    "XDC": "Southern African Development Community (SADC)",
    "XEC": "Economic Community of West African States (ECOWAS)",
    "XES": "Organisation of Eastern Caribbean States (OECS)",
    "XIM": "African Export-Import Bank (Afreximbank)",
    "XMP": "Parliamentary Assembly of the Mediterranean (PAM)",
    "XOM": "Sovereign Military Order of Malta or one of its emissaries",
    "XPO": "International Criminal Police Organization (INTERPOL)",
}

# Codes no longer in Part A but still printed on documents that may be presented, reported
# forged, or found in old records: Netherlands Antilles (dissolved 2010; ISO 3166-1 code
# withdrawn 2011) and the Neutral Zone (withdrawn 1993, listed in earlier editions of
# Doc 9303). Accepted as values; never a state that can send status notices.
_HISTORIC: dict[str, str] = {
    "ANT": "Netherlands Antilles (historic)",
    "NTZ": "Neutral Zone (historic)",
}

# Printed on documents in circulation although Doc 9303 does not list it: Kosovo's own
# passports use RKS. Accepted as a value and as a state, because the authority that issues
# these documents is the one that can report them stolen.
_UNLISTED_IN_USE: dict[str, str] = {
    "RKS": "Kosovo (issuing code in use, not listed in Doc 9303)",
}

# The fictitious state of every Doc 9303 specimen. Rejected unless a caller explicitly
# works with specimens (tests, demos): a real notice about "Utopia" is always a mistake.
SPECIMEN_CODE = "UTO"

STATE_CODES: frozenset[str] = frozenset(_STATES) | frozenset(_UNLISTED_IN_USE)
INTERNATIONAL_CODES: frozenset[str] = frozenset(_INTERNATIONAL)
HISTORIC_CODES: frozenset[str] = frozenset(_HISTORIC)
UNLISTED_CODES_IN_USE: frozenset[str] = frozenset(_UNLISTED_IN_USE)
_ALL_NAMES = MappingProxyType(
    {**_STATES, **_INTERNATIONAL, **_HISTORIC, **_UNLISTED_IN_USE, SPECIMEN_CODE: "Utopia"}
)

_CODE_SHAPE = re.compile(r"[A-Z]{1,3}")


def validate_state_code(code: str, field: str, *, allow_specimen: bool = False) -> str:
    """Return the canonical form of an issuing state or nationality code.

    Accepts any code of Doc 9303 Part 3, Section 5 (states, organisations, persons without
    a defined nationality), the historic and in-use codes listed above, in any case, with
    surrounding white space and MRZ fillers: ``"d<<"`` becomes ``"D"``. ``UTO`` is accepted
    only with ``allow_specimen``.

    Raises ``ValidationError("invalid_state_code", ..., field)`` for anything else,
    including ``DEU`` (Doc 9303 writes Germany as ``D``).
    """
    if not isinstance(code, str):
        raise ValidationError(
            "invalid_state_code", f"expected a state code as text, got {type(code).__name__}", field
        )
    canonical = code.strip().upper().rstrip("<")
    if canonical == "DEU":
        raise ValidationError(
            "invalid_state_code",
            "Germany is written 'D' in ICAO Doc 9303 (MRZ 'D<<'), not 'DEU'",
            field,
        )
    if not _CODE_SHAPE.fullmatch(canonical):
        raise ValidationError(
            "invalid_state_code",
            f"{code!r} is not an ICAO Doc 9303 state code: expected three letters A-Z "
            "(or 'D' for Germany)",
            field,
        )
    if canonical == SPECIMEN_CODE:
        if allow_specimen:
            return canonical
        raise ValidationError(
            "invalid_state_code",
            "'UTO' (Utopia) is the fictitious state of ICAO specimens, not a real issuer",
            field,
        )
    if canonical not in _ALL_NAMES:
        raise ValidationError(
            "invalid_state_code",
            f"{canonical!r} is not in the ICAO Doc 9303 Part 3 list of state and "
            "organisation codes",
            field,
        )
    return canonical


def is_state(code: str) -> bool:
    """True if ``code`` (canonical form) stands for a state or territory that issues its own
    documents, as opposed to an organisation, a nationality status or a historic code."""
    return code in STATE_CODES


def state_name(code: str) -> str | None:
    """The English short name for a canonical code, or None if the code is unknown."""
    return _ALL_NAMES.get(code)


# Document type codes ---------------------------------------------------------------------

# First character of the document code, by Doc 9303 part: P passports (Part 4); A, C, I
# official travel documents in card sizes (Parts 5, 6); V visas (Part 7).
DOCUMENT_TYPE_FIRST = frozenset("PACIV")
_DOCUMENT_TYPE_SHAPE = re.compile(r"[A-Z][A-Z<]?")


def validate_document_type(code: str, field: str) -> str:
    """Return the canonical document type code: one or two letters, fillers dropped.

    The first letter is P, A, C, I or V; the second, when present, is chosen by the issuing
    state (for example PD diplomatic, PO official, PS service, ID, IR, AC crew member
    certificate). For A, C and I documents Doc 9303 Parts 5 and 6 forbid V as the second
    letter, so that a card cannot be mistaken for a visa.

    Raises ``ValidationError("invalid_document_type", ..., field)``.
    """
    if not isinstance(code, str):
        raise ValidationError(
            "invalid_document_type",
            f"expected a document type code as text, got {type(code).__name__}",
            field,
        )
    raw = code.strip().upper()
    if not _DOCUMENT_TYPE_SHAPE.fullmatch(raw):
        raise ValidationError(
            "invalid_document_type",
            f"{code!r} is not a document type code: expected one or two letters, such as "
            "'P', 'PD', 'I', 'ID', 'AC' or 'V'",
            field,
        )
    canonical = raw.rstrip("<")
    if canonical[0] not in DOCUMENT_TYPE_FIRST:
        raise ValidationError(
            "invalid_document_type",
            f"document type {canonical!r} must start with P (passport), A, C or I (card) "
            "or V (visa)",
            field,
        )
    if len(canonical) == 2 and canonical[0] in "ACI" and canonical[1] == "V":
        raise ValidationError(
            "invalid_document_type",
            f"document type {canonical!r} is not allowed: V may not follow A, C or I",
            field,
        )
    return canonical


# Document numbers ------------------------------------------------------------------------

# Nine characters fit the MRZ field; TD1 carries longer numbers on into the optional data
# (Part 5, 4.2.4 note j): 9 + 13 more characters, the 14th optional-data position holding
# the check digit of the whole number.
MRZ_DOCUMENT_NUMBER_FIELD = 9
MAX_DOCUMENT_NUMBER_LENGTH = 22
_DOCUMENT_NUMBER_SHAPE = re.compile(r"[A-Z0-9]+")


def validate_document_number(number: str, field: str) -> str:
    """Return the canonical document number: upper case, no white space, no fillers.

    A document number is 1 to 22 characters A-Z and 0-9 (the logical number; only the
    first nine fit the MRZ field). Spaces, hyphens or fillers inside the number are
    rejected rather than silently removed, because two different numbers must never map to
    the same key.

    Raises ``ValidationError("invalid_document_number", ..., field)``.
    """
    if not isinstance(number, str):
        raise ValidationError(
            "invalid_document_number",
            f"expected a document number as text, got {type(number).__name__}",
            field,
        )
    canonical = number.strip().upper().rstrip("<")
    if not canonical:
        raise ValidationError("invalid_document_number", "the document number is empty", field)
    if len(canonical) > MAX_DOCUMENT_NUMBER_LENGTH:
        raise ValidationError(
            "invalid_document_number",
            f"the document number has {len(canonical)} characters; at most "
            f"{MAX_DOCUMENT_NUMBER_LENGTH} are allowed",
            field,
        )
    if not _DOCUMENT_NUMBER_SHAPE.fullmatch(canonical):
        bad = next(c for c in canonical if not ("A" <= c <= "Z" or "0" <= c <= "9"))
        raise ValidationError(
            "invalid_document_number",
            f"the document number contains {bad!r}; only letters A-Z and digits 0-9 are "
            "allowed (as printed in the MRZ, without spaces or hyphens)",
            field,
        )
    return canonical
