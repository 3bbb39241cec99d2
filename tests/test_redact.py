"""Redaction labels: each kind of PII gets its own label (card numbers and SSNs are not phones),
and every kind stays hidden. The wider table of what is and is not redacted is in
tests/test_observe.py."""

from __future__ import annotations

import pytest

from tina.serve.redact import redact, redact_record

LABELLED = [
    ("card-spaces", "card 4111 1111 1111 1111 ok", "card [CARD] ok"),
    ("card-dashes", "4111-1111-1111-1111", "[CARD]"),
    ("card-19-digits", "6011 0009 9013 9424 123", "[CARD]"),
    ("card-amex", "amex 3782 822463 10005.", "amex [CARD]."),
    ("card-diners", "3056 930902 5904", "[CARD]"),
    ("ssn-dashes", "ssn 123-45-6789 on file", "ssn [SSN] on file"),
    ("ssn-spaces", "123 45 6789", "[SSN]"),
    ("phone", "call 555-123-4567", "call [PHONE]"),
    ("phone-international", "+1 (555) 123-4567", "[PHONE]"),
    ("email", "bob@example.com", "[EMAIL]"),
    ("number", "acct 1234567", "acct [NUMBER]"),
    (
        "all-kinds-in-one-line",
        "4111 1111 1111 1111, 123-45-6789, 555-123-4567, bob@example.com",
        "[CARD], [SSN], [PHONE], [EMAIL]",
    ),
]

NOT_CARD_OR_SSN = [
    ("mixed-separators-card", "4111 1111-1111 1111"),  # one separator throughout
    ("mixed-separators-ssn", "123-45 6789"),
    ("date", "2026-11-22"),
    ("phone-shaped", "1234 5678"),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in LABELLED], ids=[c[0] for c in LABELLED]
)
def test_each_kind_gets_its_own_label(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text", [c[1] for c in NOT_CARD_OR_SSN], ids=[c[0] for c in NOT_CARD_OR_SSN]
)
def test_other_digit_groups_are_not_cards_or_ssns(text):
    out = redact(text)
    assert "[CARD]" not in out and "[SSN]" not in out


@pytest.mark.parametrize("text", [c[1] for c in LABELLED], ids=[c[0] for c in LABELLED])
def test_labels_hide_every_digit_and_are_stable(text):
    once = redact(text)
    assert not any(ch.isdigit() for ch in once)
    assert redact(once) == once


def test_redact_record_labels_cards_and_ssns():
    record = {"prompt": "pay with 4111 1111 1111 1111", "meta": ["ssn 123-45-6789"]}
    assert redact_record(record) == {"prompt": "pay with [CARD]", "meta": ["ssn [SSN]"]}
