"""What the UI shows of messages: failures grouped by the class of their reason, and a safe
preview of a rendered message.

A preview is the message's text part (or SMS body) with addresses and numbers masked
(``mask_text``) and every word that is not literal text of its template masked too: names,
streets and other merge fields come from data, so only the template's own words stay
readable. Words of the event's values are masked even where the template has them.
"""

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from darwin_notify_assets.domain.privacy import mask_name, mask_phone, mask_text

_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
# A word of letters, not one that masking has already shortened ("j***", "***.com").
_WORD = re.compile(r"(?<![\w*.])[^\W\d_][\w'-]*(?![\w*])")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_MASKED = re.compile(r"\S*\*\*\*\S*")
_NUMBER = re.compile(r"\d+")
_SPACES = re.compile(r"\s+")
# A number written with "+" anywhere, also glued to a word before it (an address and a
# number that a template writes without a space between them): ``mask_text`` leaves those.
_GLUED_PHONE = re.compile(r"\+\d[\d ().-]{5,}\d")
REASON_CLASS_LENGTH = 100
PREVIEW_LENGTH = 1200


def reason_class(reason: str | None) -> str:
    """A reason with what varies between messages taken out: quoted values, masked values
    and numbers, so that ``invalid email address 'x j@e.com': ...`` of every recipient is
    one class."""
    if not reason:
        return "(no reason)"
    text = _QUOTED.sub("'…'", mask_text(reason))
    text = _MASKED.sub("…", text)
    text = _SPACES.sub(" ", _NUMBER.sub("N", text)).strip()
    return text[:REASON_CLASS_LENGTH]


def failures_by_reason(messages: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, int]]:
    """``(reason class, status, count)``, the most frequent first."""
    counts = Counter((reason_class(m.get("reason")), str(m["status"])) for m in messages)
    return [(r, s, n) for (r, s), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def template_words(sources: Sequence[str | None]) -> set[str]:
    """The words a template writes itself, outside its ``{{ }}``, ``{% %}`` and ``{# #}``."""
    words: set[str] = set()
    for source in sources:
        if source:
            words.update(m.group(0) for m in _WORD.finditer(_JINJA.sub(" ", source)))
    return words


def value_words(values: Iterable[Any]) -> set[str]:
    """Every word in the string values of the given mappings (an event's old and new row)."""
    words: set[str] = set()
    for mapping in values:
        if isinstance(mapping, Mapping):
            for v in mapping.values():
                if isinstance(v, str):
                    words.update(m.group(0) for m in _WORD.finditer(v))
    return words


def mask_body(text: str, keep: AbstractSet[str], personal: AbstractSet[str] = frozenset()) -> str:
    """``text`` with addresses and numbers masked, and every word not in ``keep`` (or in
    ``personal``) reduced to its first letter."""

    def word(match: re.Match[str]) -> str:
        w = match.group(0)
        return w if w in keep and w not in personal else mask_name(w)

    masked = _GLUED_PHONE.sub(_glued_phone, mask_text(text))
    return _WORD.sub(word, masked)


def _glued_phone(match: re.Match[str]) -> str:
    digits = sum(ch.isdigit() for ch in match.group(0))
    return mask_phone(match.group(0)) if 8 <= digits <= 15 else match.group(0)


def safe_preview(
    subject: str | None,
    text: str | None,
    template_sources: Sequence[str | None],
    values: Iterable[Any] = (),
) -> str:
    """The message as Markdown that renders as plain text: masked, in a fenced code block
    that nothing in the message can close (so no HTML or Markdown of it is interpreted)."""
    keep = template_words(template_sources)
    personal = value_words(values)
    parts = []
    if subject:
        parts.append("Subject: " + mask_body(subject, keep, personal))
    parts.append(mask_body(text or "(no text part)", keep, personal))
    body = "\n\n".join(parts)
    if len(body) > PREVIEW_LENGTH:
        body = body[:PREVIEW_LENGTH] + " …"
    fence = "`" * max(3, _longest_backtick_run(body) + 1)
    return f"{fence}text\n{body}\n{fence}"


def _longest_backtick_run(text: str) -> int:
    return max((len(m.group(0)) for m in re.finditer(r"`+", text)), default=0)
