"""Masking personal data: addresses, numbers and names, alone and inside free text, while
ids, dates, amounts and keys stay readable."""

import time

import pytest

from darwin_notify_assets.domain.privacy import mask_email, mask_name, mask_phone, mask_text


@pytest.mark.parametrize(
    ("address", "masked"),
    [
        ("jose.munoz70@example.com", "j***@e***.com"),
        ("Jane.Doe+newsletter@example.com", "J***@e***.com"),  # plus-addressing
        ("a@b.co", "a***@b***.co"),  # never the length
        ("agent@mail.darwin-realty.co.uk", "a***@m***.uk"),
        ("josé@bücher.de", "j***@b***.de"),  # IDN
        ("伟@例子.中国", "伟***@例***.中国"),
        ("jose@xn--bcher-kva.de", "j***@x***.de"),
        ("foo@bar", "f***@b***"),  # no top-level domain
        ("jose@", "j***@"),
        ("@example.com", "@e***.com"),
        ("jose munoz@example.com", "j***@e***.com"),
        ("not-an-address", "n***"),
        ("  jose@example.com ", "j***@e***.com"),
        ("", ""),
    ],
)
def test_mask_email(address, masked):
    assert mask_email(address) == masked


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+15551234567", "+1******4567"),
        ("+1 (555) 123-4567", "+1******4567"),
        ("+44 7700 900123", "+4*******0123"),
        ("(312) 736-5000", "******5000"),
        ("312.736.5000", "******5000"),
        ("3127365000", "******5000"),
        ("555-0100", "*****00"),
        ("12", "**"),
        ("+", "***"),
        ("", "***"),
    ],
)
def test_mask_phone(number, masked):
    assert mask_phone(number) == masked


@pytest.mark.parametrize(
    ("name", "masked"),
    [
        ("José Muñoz", "J*** M***"),
        ("  Zoë   O'Brien-Smith ", "Z*** O***"),
        ("伟", "伟***"),
        ("", ""),
    ],
)
def test_mask_name(name, masked):
    assert mask_name(name) == masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        # The reasons darwin-notify writes, as they are built.
        (
            "invalid email address 'foo@bar': The part after the @-sign is not valid. "
            "It should have a period.",
            "invalid email address 'f***@b***': The part after the @-sign is not valid. "
            "It should have a period.",
        ),
        (
            "invalid email address 'jose munoz@example.com': The email address contains "
            "invalid characters before the @-sign: SPACE.",
            "invalid email address 'j***@e***.com': The email address contains "
            "invalid characters before the @-sign: SPACE.",
        ),
        (
            "invalid email address 'jose@': There must be something after the @-sign.",
            "invalid email address 'j***@': There must be something after the @-sign.",
        ),
        ("invalid phone number '555-0100'", "invalid phone number '*****00'"),
        ("invalid phone number '+1 312 736 50000'", "invalid phone number '+1*******0000'"),
        ("invalid phone number '+44 20'", "invalid phone number '+44 20'"),  # too short
        (
            "SMS gateway refused the message (400): code 21211: The 'To' number "
            "+13127365000 is not a valid phone number.",
            "SMS gateway refused the message (400): code 21211: The 'To' number "
            "+1******5000 is not a valid phone number.",
        ),
        (
            "SendGrid refused the message (400): personalizations.0.to.0.email: Does not "
            "contain a valid address.",
            "SendGrid refused the message (400): personalizations.0.to.0.email: Does not "
            "contain a valid address.",
        ),
        # Free text with addresses in it.
        ("write to jose.munoz70@example.com.", "write to j***@e***.com."),
        ("<jane+tag@example.org>, zoe@bücher.de", "<j***@e***.org>, z***@b***.de"),
        ("mailto:jose@example.com", "mailto:j***@e***.com"),
        ("call (312) 736-5000 or 312.736.5000", "call ******5000 or ******5000"),
        (
            "mobile +44 7700 900123, office +1-312-736-5000",
            "mobile +4*******0123, office +1******5000",
        ),
        ("fax 3127365000.", "fax ******5000."),
        ("(call +13127365000)", "(call +1******5000)"),
        ("x (555-0100), tel:+13127365000", "x (*****00), tel:+1******5000"),
        ("O'Brien <o'brien@example.com>", "O'Brien <o***@e***.com>"),
        ("unbalanced 'jose@example.com", "unbalanced 'j***@e***.com"),
        ("_x@example.com", "_***@e***.com"),
        # A bare run of 10 digits or more reads as a phone number, whatever it was.
        ("order 1234567890", "order ******7890"),
        # What must stay: ids, keys, dates, times, amounts, counts, hosts.
        ("at 14:01:02.1234567890, range 100-2000 sqft", None),
        ("contact 138 has not opted in (EmailOptIn is off)", None),
        ("agent 17 of Property 61 not found", None),
        ("s2|Property:5:update@2026-03-02 14:01:02.123456|agent:3", None),
        ("s1|People:138|contact:138", None),
        ("window 2026-03-02-14:00 read at 2026-03-02 14:36:51", None),
        ("on 03/02/2026 and 2026/03/02", None),
        ("price drop on 12 Maple St: now $340,000 (was $350,000)", None),
        ("commission $1,234,567.89 on 12 deals", None),
        ("SendGrid did not accept a connection: pool(host='127.0.0.1', port=58025)", None),
        ("message 000000042 and provider id SM0123456789abcdef0123456789abcdef", None),
        ("after 3 attempts; never accepted", None),
        ("totals of agent 7132 do not include window 2026-03-02-14:05", None),
        ("zip 62704-1234, order #1234567890", None),
        ("build 1.2.3.4567 on 192.168.100.200", None),
    ],
)
def test_mask_text(text, masked):
    assert mask_text(text) == (text if masked is None else masked)


def test_mask_text_masks_every_occurrence_and_keeps_the_rest():
    text = "a jose@example.com b jose@example.com c +13127365000 d"
    assert mask_text(text) == "a j***@e***.com b j***@e***.com c +1******5000 d"


@pytest.mark.parametrize("text", ["a" * 200_000, "1" * 200_000, "a." * 100_000, "@" * 200_000])
def test_mask_text_takes_linear_time(text):
    started = time.perf_counter()
    assert mask_text(text) == text
    assert time.perf_counter() - started < 1.0
