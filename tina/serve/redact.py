"""PII redaction for logs: the one function every log writer passes its text through.

What it covers (`redact`), in this order, so a longer shape is not cut up by a shorter rule:

1. **emails** → `[EMAIL]`: `local@domain.tld` (letters, digits and `._%+-` before the `@`, a
   dotted domain ending in a 2+ letter top-level domain);
2. **phone-number shapes** → `[PHONE]`: an optional `+country code`, an area code (bare or in
   parentheses), then one to three more digit groups separated by a space, `.` or `-`, the last
   of 3-4 digits, and 7 digits or more in all: `+1 (555) 123-4567`, `555-123-4567`,
   `+44 20 7946 0958`, `(555) 123 4567`, `555.123.4567`; and `+` followed by 7-15 digits
   (`+15551234567`);
3. **runs of 6 or more digits** → `[NUMBER]` (account, card, ID and unformatted phone numbers).

Short numbers are left alone, so logs of the arithmetic tasks stay readable: `1020`, `82`,
`r1020`, `Add 37 and 45`, 5-digit numbers, dates such as `2026-11-22` and times such as `12:30`.
The replacements hold no digit or `@`, so `redact` is idempotent.

What it does not cover: names, postal addresses, IDs with letters between short digit groups
(`AB12-345`), numbers of fewer than 6 digits, digit groups split by commas (`1,234,567`), phone
numbers written with other separators (`555/123/4567`) or in 2-digit groups only
(`06 12 34 56 78`) unless a run of 6+ digits remains. Digit groups that merely look like a
phone number (`1234 5678`, a card number in 4-digit groups) come out as `[PHONE]`: the rule
errs on the side of hiding.

`redact_record` applies `redact` to every string inside a JSON-like value (dict keys untouched).
Redaction changes only what is written to a log: callers redact a copy, never what the model
is fed or what the user is shown.
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
DIGITS_RE = re.compile(r"[0-9]{6,}")

PHONE_MIN_DIGITS = 7  #: fewer digits than this in a phone shape is not a phone number

EMAIL_TOKEN, PHONE_TOKEN, NUMBER_TOKEN = "[EMAIL]", "[PHONE]", "[NUMBER]"


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    return PHONE_TOKEN if digits >= PHONE_MIN_DIGITS else text


def redact(text: str) -> str:
    """`text` with emails, phone-number shapes and runs of 6+ digits replaced (module docstring)."""
    text = EMAIL_RE.sub(EMAIL_TOKEN, text)
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
