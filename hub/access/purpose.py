"""The purpose a user states before each access to ALPR information (policy 429.4).

A purpose must name the specific investigation: a case number matching one of the policy's patterns,
or (where the policy allows it) ``suspect <last name>``. "investigation" or other generic words alone
are refused. Purposes carrying criminal-history or CLETS content, or personal identifiers beyond the
suspect's last name (SSN, date of birth, driver licence, CII/FBI numbers), are refused with an
explanation, and what is logged has those identifiers redacted: the access log must not become a
store of the very data the policy keeps out of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from hub.access.policy import PurposeSection

MAX_PURPOSE_LENGTH = 200

PurposeKind = Literal["case", "suspect", "refused", "flagged"]

# Personal identifiers and criminal-history content, each with the explanation the user sees.
_IDENTIFIERS: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("SSN", re.compile(r"\b\d{3}-\d{2}-\d{4}\b|\b(?:ssn|social security)\b", re.I),
     "a Social Security number"),
    ("DOB", re.compile(
        r"\b(?:dob|d\.o\.b\.?|date of birth|born)\b"
        r"|\b\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b"
        r"|\b(?:19|20)\d{2}-\d{1,2}-\d{1,2}\b", re.I),
     "a date of birth"),
    ("DL", re.compile(r"\b[A-Z]\d{7}\b|\b(?:driver'?s? licen[cs]e|\bdl\s*#|\bcdl)\b", re.I),
     "a driver licence number"),
    ("CII/FBI", re.compile(r"\b(?:cii|fbi\s*(?:no|number|#)|fbi#|sid\s*#?\s*\d)", re.I),
     "a criminal-identification number"),
    ("CLETS", re.compile(
        r"\b(?:clets|ncic|nlets|rap ?sheets?|criminal history|arrest record|priors?|convict(?:ed|ion)s?"
        r"|parolee?|probation(?:er)?|felon(?:y|ies)? record|booking (?:no|number|#)|warrant (?:no|number|#))\b",
        re.I),
     "criminal-history or CLETS information"),
)  # fmt: skip

_GENERIC = frozenset({
    "investigation", "investigations", "investigate", "investigative", "case", "cases", "search", "searching",
    "query", "lookup", "look", "check", "checking", "patrol", "work", "official", "business", "police", "law",
    "enforcement", "crime", "criminal", "suspect", "suspects", "vehicle", "plate", "plates", "test", "testing",
    "general", "routine", "followup", "follow", "up", "na", "n/a", "none", "other", "misc"
})  # fmt: skip
_SUSPECT = re.compile(r"^suspect\s*[:\-]?\s*(?P<name>[A-Za-z][A-Za-z'\-]{1,39})$", re.I)


@dataclass(frozen=True, slots=True)
class PurposeCheck:
    ok: bool
    kind: PurposeKind
    logged_text: str  # what the access log keeps: the purpose with identifiers redacted
    reason: str = ""
    case_number: str | None = None


def _redact(text: str) -> tuple[str, list[str]]:
    found = []
    for label, pattern, explanation in _IDENTIFIERS:
        text, count = pattern.subn(f"[{label} REDACTED]", text)
        if count:
            found.append(explanation)
    return text, found


def check_purpose(purpose: str, rules: PurposeSection) -> PurposeCheck:
    """Whether ``purpose`` is an acceptable reason to access ALPR information, and what to log."""
    text = " ".join(purpose.split())
    if len(text) > MAX_PURPOSE_LENGTH:
        return PurposeCheck(False, "refused", text[:MAX_PURPOSE_LENGTH] + "...", f"a purpose is at most "
                            f"{MAX_PURPOSE_LENGTH} characters: name the case, not its details")  # fmt: skip
    case_number = _find_case_number(text, rules)
    # Case numbers can look like dates ("24-0117"): redact around them, never inside them.
    parts = text.split(case_number) if case_number else [text]
    redactions = [_redact(part) for part in parts]
    logged = (case_number or "").join(text for text, _ in redactions)
    found = sorted({explanation for _, explanations in redactions for explanation in explanations})
    if found:
        return PurposeCheck(
            False, "flagged", logged,
            f"refused: the purpose appears to contain {', '.join(found)}. Give only the case number or the "
            "suspect's last name; criminal history, CLETS information and personal identifiers must not be entered.",
        )  # fmt: skip
    if case_number is not None:
        return PurposeCheck(True, "case", logged, case_number=case_number)
    suspect = _SUSPECT.match(text)
    if rules.allow_suspect_last_name and suspect and suspect["name"].lower() not in _GENERIC:
        return PurposeCheck(True, "suspect", logged)
    example = "a case number such as 24-001234" + (" or 'suspect <last name>'" if rules.allow_suspect_last_name else "")
    if not text:
        return PurposeCheck(False, "refused", "", f"a purpose is required: name the investigation ({example})")
    return PurposeCheck(
        False, "refused", logged,
        f"refused: the purpose does not name a specific investigation ('investigation' or other generic words "
        f"alone are not enough); give {example}.",
    )  # fmt: skip


def _find_case_number(text: str, rules: PurposeSection) -> str | None:
    for pattern in rules.case_number_patterns:
        match = re.search(rf"(?<![\w-])(?:{pattern})(?![\w-])", text)
        if match:
            return match.group(0)
    return None
