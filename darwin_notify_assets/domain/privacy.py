"""Masking personal data for what people see: the Dagster UI's metadata, logs, reports.

The store keeps addresses whole (a person deciding about an ``unknown`` message needs them);
everything shown elsewhere goes through these first. A masked value keeps enough to
recognise it among a few (``j***@e***.com``, ``+1******4567``, ``J*** M***``) and never its
length of letters. Standard library only.
"""

import re

MASK = "***"

# The local part of an address starts a word (so a quote before it stays out, and a long
# word is tried once, not from each of its letters); "|", "/", "{", "}" and "`" are left out
# although RFC 5322 allows them, because they join the parts of keys and paths far more
# often than they appear in an address.
_LOCAL = r"(?<![\w.!#%&*+=?^~-])\w[\w.!#%&'*+=?^~-]*"
_LABEL = r"[^\W_](?:[\w-]*[^\W_])?"
# A domain needs a letter: "update@2026-03-02" (a version in a candidate key) is no address.
_DOMAIN = rf"(?=[\w.-]*[^\W\d_]){_LABEL}(?:\.{_LABEL})*"
# A quoted value with an "@" in it (``repr`` of an address that failed validation) is
# masked whole, spaces and all.
_QUOTED_ADDRESS = r"(?P<quote>['\"])(?P<quoted>[^'\"\n]{0,320}@[^'\"\n]{0,320})(?P=quote)"
_EMAIL = rf"(?P<email>{_LOCAL}@(?:{_DOMAIN}|(?![\w.-])))"
# A run of digits and the separators phone numbers are written with, not glued to a word, an
# amount or a path; which runs are phone numbers is decided in ``_phone_like``.
_PHONE = r"(?<![\w$€£¥./#@+-])(?<!\d:)(?P<phone>\+?\(?\d[\d ().-]{5,}\d\)?)(?![\w@]|[.:-]\d)"
_PATTERN = re.compile(f"{_QUOTED_ADDRESS}|{_EMAIL}|{_PHONE}")

_DATE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4}")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
# A local number as in "555-0100"; an exchange never starts with 0 or 1 ("100-2000" is a range).
_LOCAL_NUMBER = re.compile(r"[2-9]\d{2}-\d{4}")
_SEPARATORS = re.compile(r"[ ().-]")


def mask_email(address: str) -> str:
    """``jose.munoz+news@example.com`` -> ``j***@e***.com``.

    The first character of the local part and of the domain, and the domain's last label,
    stay; a value without an "@" keeps only its first character.
    """
    address = address.strip()
    if not address:
        return address
    local, at, domain = address.rpartition("@")
    if not at:
        return address[0] + MASK
    masked_local = (local[0] + MASK) if local else ""
    if not domain:
        return f"{masked_local}@"
    head, dot, last = domain.rpartition(".")
    if not dot or not head:
        return f"{masked_local}@{domain[0]}{MASK}"
    return f"{masked_local}@{head[0]}{MASK}.{last}"


def mask_phone(number: str) -> str:
    """``+1 (555) 123-4567`` -> ``+1******4567``.

    Separators go; every digit but the last four (two when the number has fewer than ten
    digits) becomes ``*``, and an international number keeps its ``+`` and first digit.
    """
    number = number.strip()
    digits = "".join(ch for ch in number if ch.isdigit())
    if not digits:
        return MASK
    plus = "+" if number.startswith("+") else ""
    tail = 4 if len(digits) >= 10 else 2
    if len(digits) <= tail:
        return plus + "*" * len(digits)
    head = 1 if plus and len(digits) >= 10 else 0
    return plus + digits[:head] + "*" * (len(digits) - tail - head) + digits[-tail:]


def mask_name(name: str) -> str:
    """``José Muñoz`` -> ``J*** M***``: each word keeps its first letter."""
    return " ".join(word[0] + MASK for word in name.split())


def mask_text(text: str) -> str:
    """Free text (a failure reason, a log line) with every email address and phone number
    in it masked; ids, dates, times, amounts and keys stay as they are.

    An email address is masked wherever it stands, also an invalid one (``foo@bar``), and a
    quoted value with an "@" in it is masked whole. A phone number is a run of digits (with
    spaces, dashes, dots or parentheses between them) that starts with ``+`` and has 8 to 15
    digits; or has 10 to 15 digits (so a bare id of 10 digits or more is masked too); or is
    written ``555-0100``. Dates (``2026-03-02``), times, IPv4 addresses, ranges such as
    ``100-2000``, and runs glued to letters, ``$``, ``#`` or a time are not phone numbers.
    """
    return _PATTERN.sub(_mask_match, text)


def _mask_match(match: re.Match[str]) -> str:
    if match.group("quoted") is not None:
        quote = match.group("quote")
        return f"{quote}{mask_email(match.group('quoted'))}{quote}"
    if match.group("email") is not None:
        return mask_email(match.group("email"))
    run = match.group("phone")
    lead = trail = ""
    # Parentheses around the number, or one that closes text before it, are not part of it.
    if run.startswith("(") and run.endswith(")") and run.count("(") == run.count(")") == 1:
        lead, run, trail = "(", run[1:-1], ")"
    elif run.endswith(")") and run.count(")") > run.count("("):
        run, trail = run[:-1], ")"
    return lead + (mask_phone(run) if _phone_like(run) else run) + trail


def _phone_like(run: str) -> bool:
    if _DATE.search(run) or _IPV4.fullmatch(run) or "  " in run:
        return False
    digits = sum(ch.isdigit() for ch in run)
    if run.startswith("+"):
        return 8 <= digits <= 15
    if 10 <= digits <= 15:
        # Groups of digits, as numbers are written: not "12 34 56 78 90 12" of small counts.
        groups = [g for g in _SEPARATORS.split(run) if g]
        return len(groups) <= 5 and all(len(g) >= 2 for g in groups[1:])
    return _LOCAL_NUMBER.fullmatch(run) is not None
