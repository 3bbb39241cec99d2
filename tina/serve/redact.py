"""PII redaction for logs: the one function every log writer passes its text through.

What it covers (`redact`), in this order, so a longer shape is not cut up by a shorter rule:
emails → `[EMAIL]`; card numbers in 4-4-4-4(-3) or 4-6-5 / 4-6-4 digit groups (one separator, a
space or `-`) → `[CARD]`; US social security numbers (3-2-4 digit groups) → `[SSN]`;
phone-number shapes (an optional `+country code`, an area code, one to three more digit groups,
7 digits or more in all; or `+` and 7-15 digits) → `[PHONE]`; runs of 6 or more digits →
`[NUMBER]`. Short numbers (`1020`, `Add 37 and 45`, dates, times) are left alone,
so logs of the arithmetic tasks stay readable; `redact` is idempotent. `redact_record` applies
it to every string inside a JSON-like value (dict keys untouched). Callers redact a copy, never
what the model is fed or what the user is shown.

What it does not cover: names, postal addresses, IDs with letters between short digit groups,
numbers of fewer than 6 digits, comma-grouped digits, phones with other separators or in 2-digit
groups only; digit groups that merely look like a phone number come out as `[PHONE]` (it errs
on the side of hiding). Every rule and example: docs/serving.md.
"""

from __future__ import annotations

import re
from typing import Any

EMAIL_RE = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])"
)
PHONE_RE = re.compile(
    r"(?<![\w+])"
    r"(?:"
    r"(?:\+[0-9]{1,3}[ .-]?)?"  # country code
    r"(?:\([0-9]{1,4}\)[ .-]?|[0-9]{1,4}[ .-])"  # area code, in parentheses or separated
    r"(?:[0-9]{2,4}[ .-]){0,2}"  # middle groups
    r"[0-9]{3,4}"  # last group
    r"|\+[0-9]{7,15}"  # international, unformatted
    r")"
    r"(?![\w])"
)
CARD_RE = re.compile(
    r"(?<![\w+.-])"
    r"(?:"
    r"[0-9]{4}(?P<sep>[ -])[0-9]{4}(?P=sep)[0-9]{4}(?P=sep)[0-9]{4}(?:(?P=sep)[0-9]{3})?"
    r"|[0-9]{4}(?P<amex>[ -])[0-9]{6}(?P=amex)[0-9]{4,5}"  # American Express, Diners
    r")"
    r"(?![\w]|[.-][0-9])"
)
SSN_RE = re.compile(r"(?<![\w+.-])[0-9]{3}(?P<sep>[ -])[0-9]{2}(?P=sep)[0-9]{4}(?![\w]|[.-][0-9])")
DIGITS_RE = re.compile(r"[0-9]{6,}")

PHONE_MIN_DIGITS = 7  #: fewer digits than this in a phone shape is not a phone number

EMAIL_TOKEN, CARD_TOKEN, SSN_TOKEN = "[EMAIL]", "[CARD]", "[SSN]"
PHONE_TOKEN, NUMBER_TOKEN = "[PHONE]", "[NUMBER]"


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    return PHONE_TOKEN if digits >= PHONE_MIN_DIGITS else text


def redact(text: str) -> str:
    """`text` with emails, card numbers, SSNs, phone-number shapes and runs of 6+ digits
    replaced, each by its own label (module docstring)."""
    text = EMAIL_RE.sub(EMAIL_TOKEN, text)
    text = CARD_RE.sub(CARD_TOKEN, text)
    text = SSN_RE.sub(SSN_TOKEN, text)
    text = PHONE_RE.sub(_phone, text)
    return DIGITS_RE.sub(NUMBER_TOKEN, text)


def redact_record(obj: Any) -> Any:
    """A copy of a JSON-like value with `redact` applied to every string in it (dict values,
    list and tuple items, at any depth). Dict keys and non-string scalars are kept as they are."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {key: redact_record(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [redact_record(item) for item in obj]
    if isinstance(obj, tuple):
        return tuple(redact_record(item) for item in obj)
    return obj
