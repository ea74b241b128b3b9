"""Rendering with Jinja2: sandboxed, strict about undefined names, HTML autoescaped.

Email gets a subject, an HTML body (autoescaped) and a text body (not escaped); SMS gets a
body and its segment count (GSM-7 or UCS-2). Templates are compiled once per schedule set, so a
broken template is reported once, by name.
"""

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import phonenumbers
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from darwin_notify_assets.domain.html_text import html_to_text
from darwin_notify_assets.domain.model import Recipient
from darwin_notify_assets.domain.schedules import Channel, ScheduleSet, Template
from darwin_notify_assets.domain.sms import sms_segments

DEFAULT_PHONE_REGION = "US"

# -- content the providers accept ----------------------------------------------------------------
#: Twilio: "The text of the message you want to send, limited to 1600 characters."
SMS_MAX_CHARACTERS = 1600
#: Segments an SMS may take unless configured (``DARWIN_NOTIFY_SMS_MAX_SEGMENTS``).
DEFAULT_SMS_MAX_SEGMENTS = 10


def money(value: Any) -> str:
    if value is None or value == "":
        return ""
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    cents = amount.quantize(Decimal("0.01"))
    return f"${cents:,.0f}" if cents == cents.to_integral() else f"${cents:,.2f}"


def format_date(value: Any, fmt: str = "%b %d, %Y") -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime | date):
        return value.strftime(fmt)
    return str(value)


def _environment(autoescape: bool) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        autoescape=autoescape, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    env.filters["money"] = money
    env.filters["date"] = format_date
    return env


HTML_ENV = _environment(autoescape=True)
TEXT_ENV = _environment(autoescape=False)


@dataclass(frozen=True)
class CompiledTemplate:
    template_id: int
    name: str
    subject: Any = None
    html: Any = None
    text: Any = None
    sms: Any = None


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str


@dataclass(frozen=True)
class RenderedSms:
    body: str
    encoding: str
    segments: int


class RenderError(Exception):
    """A template could not be rendered for this message (the reason is the message)."""


def compile_template(t: Template) -> CompiledTemplate:
    """Compile every part; raise TemplateError naming the part that failed."""
    parts: dict[str, Any] = {}
    for part, source, env in (
        ("subject", t.subject, TEXT_ENV),
        ("html", t.html_body, HTML_ENV),
        ("text", t.text_body, TEXT_ENV),
        ("sms", t.sms_body, TEXT_ENV),
    ):
        if source:
            try:
                compiled = env.from_string(source)
            except TemplateError as exc:
                line = getattr(exc, "lineno", None)
                where = f" line {line}" if line else ""
                raise TemplateError(
                    f"template {t.name!r} ({part}{where}): {exc.message or exc}"
                ) from None
            # Jinja keeps a template's globals as a ChainMap over the environment's and copies
            # them, key by key, into every render's context; one flat dict costs far less.
            compiled.globals = dict(compiled.globals)
            parts[part] = compiled
    return CompiledTemplate(template_id=t.template_id, name=t.name, **parts)


def compile_templates(
    schedules: ScheduleSet,
) -> tuple[dict[int, CompiledTemplate], dict[int, str]]:
    """Compiled templates by id, and the errors of those that failed, by template id."""
    compiled, errors = {}, {}
    for tid, template in schedules.templates.items():
        try:
            compiled[tid] = compile_template(template)
        except TemplateError as exc:
            errors[tid] = str(exc)
    return compiled, errors


def _render(template: Any, context: Mapping[str, Any], name: str, part: str) -> str:
    try:
        return str(template.render(context))
    except TemplateError as exc:
        raise RenderError(f"template {name!r} ({part}): {exc.message or exc}") from None
    except Exception as exc:  # noqa: BLE001 - a filter or value raised: this message only
        raise RenderError(f"template {name!r} ({part}): {type(exc).__name__}: {exc}") from None


def render_email(t: CompiledTemplate, context: Mapping[str, Any]) -> RenderedEmail:
    subject = _render(t.subject, context, t.name, "subject").strip() if t.subject else ""
    subject = " ".join(subject.split())
    html = _render(t.html, context, t.name, "html") if t.html else ""
    text = _render(t.text, context, t.name, "text") if t.text else ""
    if not text.strip() and html:
        text = html_to_text(html)
    return RenderedEmail(subject=subject, html=html, text=text)


def render_sms(
    t: CompiledTemplate,
    context: Mapping[str, Any],
    max_segments: int = DEFAULT_SMS_MAX_SEGMENTS,
) -> RenderedSms:
    """Render an SMS; raise RenderError if the gateway would refuse it or it needs more than
    ``max_segments`` segments (no provider would send it whole)."""
    body = _render(t.sms, context, t.name, "sms").strip()
    encoding, segments = sms_segments(body)
    if len(body) > SMS_MAX_CHARACTERS:
        raise RenderError(
            f"template {t.name!r} (sms): the body has {len(body)} characters, more than the "
            f"{SMS_MAX_CHARACTERS} the SMS gateway accepts"
        )
    if segments > max_segments:
        raise RenderError(
            f"template {t.name!r} (sms): the body needs {segments} {encoding} segments, more "
            f"than the {max_segments} allowed (DARWIN_NOTIFY_SMS_MAX_SEGMENTS)"
        )
    return RenderedSms(body=body, encoding=encoding, segments=segments)


def check_email(address: Any) -> str:
    """The normalized address, or ValueError with the reason."""
    if not address or not str(address).strip():
        raise ValueError("no email address")
    return _valid_email(str(address).strip())


# The common shape of an address: an ASCII local part of letters, digits, "_" and "+" in
# runs joined by single dots or hyphens; an ASCII host name of letter-and-digit labels joined
# by single hyphens, under a top-level domain of letters. email_validator accepts every such
# address within the length limits outside its special-use domains, and normalizes it by
# lowercasing the domain; a test holds the two to that on generated addresses. Every other
# address goes to email_validator, which has the last word.
_PLAIN_EMAIL = re.compile(
    r"([A-Za-z0-9_+]+(?:[.-][A-Za-z0-9_+]+)*)@((?:[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*\.)+[A-Za-z]{2,63})"
)
_SPECIAL_USE = tuple(SPECIAL_USE_DOMAIN_NAMES)


def _plain_email(address: str) -> str | None:
    """The normalized address if it has the common shape, else None."""
    match = _PLAIN_EMAIL.fullmatch(address)
    if match is None or len(address) > 254 or len(match.group(1)) > 64:
        return None
    domain = match.group(2).lower()
    if any(len(label) > 63 for label in domain.split(".")):
        return None
    if any(domain == d or domain.endswith("." + d) for d in _SPECIAL_USE):
        return None
    return f"{match.group(1)}@{domain}"


# A fan-out sends one contact many messages in a window: validate each address once.
@functools.lru_cache(maxsize=65536)
def _valid_email(address: str) -> str:
    plain = _plain_email(address)
    if plain is not None:
        return plain
    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"invalid email address {address!r}: {exc}") from None


def check_phone(number: Any, region: str = DEFAULT_PHONE_REGION) -> str:
    """The number in E.164, or ValueError with the reason."""
    if not number or not str(number).strip():
        raise ValueError("no mobile phone number")
    return _valid_phone(str(number), region)


@functools.lru_cache(maxsize=65536)
def _valid_phone(number: str, region: str) -> str:
    try:
        parsed = phonenumbers.parse(str(number), region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"invalid phone number {number!r}: {exc}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError(f"invalid phone number {number!r}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def address_for(channel: str, person: Mapping[str, Any], recipient: Recipient) -> str:
    """The person's address on ``channel``, from the columns the source model names."""
    if channel == Channel.EMAIL:
        return check_email(person.get(recipient.email))
    return check_phone(person.get(recipient.phone))
