"""Choosing the email provider, and failing over from one to the other.

``DARWIN_NOTIFY_EMAIL_PROVIDER`` names the first provider (``sendgrid`` or ``mandrill``) and
``DARWIN_NOTIFY_EMAIL_FAILOVER`` the second (or nothing). A message goes to the second only
when the first provably did not take it: a refusal the first documents as not accepted
(``ProviderRejected``, except a refusal of the recipient), or a request that never reached it
whole (``ProviderUnavailable``: no connection, a 429 the provider documents as not
processed). Anything ambiguous (``ProviderOutcomeUnknown``) never fails over, so a message is
never in two providers' hands.
"""

import logging
from collections.abc import Mapping

from darwin_notify_assets.config import check_email_provider
from darwin_notify_assets.delivery.mandrill import MandrillSender
from darwin_notify_assets.delivery.senders import Sender, SendGridSender, SendResult
from darwin_notify_assets.errors import (
    ConfigurationError,
    ProviderOutcomeUnknown,
    ProviderRefusedRecipient,
    ProviderRejected,
    ProviderUnavailable,
)
from darwin_notify_assets.storage.store import OutboundMessage
from darwin_notify_assets.webhooks.signatures import UnsubscribeLinks, UnsubscribeTokens

log = logging.getLogger(__name__)


class FailoverSender(Sender):
    """Sends through ``first``; a message ``first`` provably did not take goes to ``second``.

    A failure of both is reported as the second's, with the first's reason in front: a
    refusal is ``failed``, a second provider also unavailable is retried by the send worker
    (from the first again, which is as safe: neither took it), an ambiguous answer of the
    second is ``unknown``.
    """

    channel = "email"

    def __init__(self, first: Sender, second: Sender):
        self.first = first
        self.second = second

    def send(self, message: OutboundMessage) -> SendResult:
        try:
            return self.first.send(message)
        except ProviderRefusedRecipient:
            raise
        except (ProviderRejected, ProviderUnavailable) as exc:
            first = exc
        log.warning(
            "message %s: %s did not take it (%s); failing over to %s",
            message.message_id,
            _name(self.first),
            type(first).__name__,
            _name(self.second),
        )
        try:
            return self.second.send(message)
        except ProviderUnavailable as exc:
            raise ProviderUnavailable(
                f"{first}; failed over: {exc}", retry_after=exc.retry_after
            ) from None
        except ProviderRefusedRecipient as exc:
            raise ProviderRefusedRecipient(f"{first}; failed over: {exc}") from None
        except ProviderRejected as exc:
            raise ProviderRejected(f"{first}; failed over: {exc}") from None
        except ProviderOutcomeUnknown as exc:
            raise ProviderOutcomeUnknown(f"{first}; failed over: {exc}") from None

    def close(self) -> None:
        self.first.close()
        self.second.close()


def _name(sender: Sender) -> str:
    return str(getattr(sender, "provider", type(sender).__name__))


def select_email_sender(
    senders: Mapping[str, Sender],
    *,
    provider: str = "sendgrid",
    failover: str = "",
    mandrill_api_key: str | None = None,
    mandrill_host: str = "",
    email_from: str,
    timeout: float = 10.0,
    pool_size: int = 8,
    webhook_public_url: str = "",
    unsubscribe_secret: str | None = None,
    unsubscribe_mailto: str = "",
) -> dict[str, Sender]:
    """``senders`` (from ``build_senders``) with the email sender the settings choose.

    ``sendgrid`` alone keeps what ``build_senders`` made (SendGrid with a key, else the file
    outbox). Naming Mandrill, first or as the failover, needs its key, and a failover needs
    SendGrid's too; a missing one is a ConfigurationError, never a silent fallback.
    """
    check_email_provider(provider, failover)
    chosen = dict(senders)
    if provider == "sendgrid" and not failover:
        return chosen
    email = chosen["email"]

    def mandrill() -> Sender:
        if not mandrill_api_key:
            raise ConfigurationError(
                "DARWIN_NOTIFY_MANDRILL_API_KEY must be set to send email through Mandrill"
            )
        links = (
            UnsubscribeLinks(
                webhook_public_url, UnsubscribeTokens(unsubscribe_secret), unsubscribe_mailto
            )
            if unsubscribe_secret
            else None
        )
        return MandrillSender(
            mandrill_api_key,
            email_from,
            mandrill_host or None,
            timeout=timeout,
            pool_size=pool_size,
            unsubscribe=links,
        )

    def sendgrid() -> Sender:
        if not isinstance(email, SendGridSender):
            raise ConfigurationError(
                "DARWIN_NOTIFY_SENDGRID_API_KEY must be set: the email failover names SendGrid"
                if provider == "mandrill"
                else "DARWIN_NOTIFY_SENDGRID_API_KEY must be set to fail over from SendGrid"
            )
        return email

    make = {"sendgrid": sendgrid, "mandrill": mandrill}
    first = make[provider]()
    second = make[failover]() if failover else None
    if email is not first and email is not second:
        email.close()  # the file outbox (or SendGrid) that build_senders made, now unused
    chosen["email"] = FailoverSender(first, second) if second is not None else first
    return chosen
