"""HTTP to a provider: one request over a pool of kept-alive connections, and, when it fails,
whether the provider can have it.

At most once rests on one fact the transport can know: whether the whole request was handed
to the connection. An HTTP server acts on a request only once it has all of it, so a request
not written whole (no connection, or the connection failed while it was written) cannot have
been accepted, and sending it again cannot duplicate anything. Once it was written whole, a
timeout or a broken connection leaves nobody sure: the outcome is unknown.
"""

import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import urllib3
from urllib3 import exceptions as transport_errors

from darwin_notify_assets.errors import (
    ProviderOutcomeUnknown,
    ProviderRejected,
    ProviderUnavailable,
)


@dataclass(frozen=True)
class HttpAnswer:
    """A provider's answer: status, headers (case-insensitive) and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class _WrittenBody:
    """A request body that knows whether the connection took all of it.

    urllib3 sends an iterable body chunk by chunk and asks for the next chunk only after the
    previous one was sent, so the generator runs past its only ``yield`` exactly when the
    whole body was handed to the socket. (urllib3 swallows a reset while sending, so that a
    server's early answer stays readable; its exception then surfaces from the read, and this
    flag is what tells the two apart.)
    """

    def __init__(self, data: bytes):
        self.data = data
        self.written = False

    def __iter__(self) -> Iterator[bytes]:
        yield self.data
        self.written = True


class Transport:
    """Requests to one provider over a pool of kept-alive connections.

    Args:
        provider: The provider's name, for the errors ("SendGrid", "SMS gateway").
        base_url: Where the requests go; decides whether the proxy environment applies.
        timeout: Seconds to connect, and seconds to wait for each read of the answer.
        pool_size: Connections kept open, one per sending thread.
    """

    def __init__(self, provider: str, base_url: str, timeout: float = 10.0, pool_size: int = 8):
        self.provider = provider
        self._timeout = urllib3.Timeout(connect=timeout, read=timeout)
        # The proxy environment (HTTPS_PROXY, NO_PROXY, ...) is honoured as urllib does it.
        target = urlsplit(base_url)
        proxy = urllib.request.getproxies().get(target.scheme)
        self._pool: urllib3.PoolManager
        if proxy and not urllib.request.proxy_bypass(target.hostname or ""):
            self._pool = urllib3.ProxyManager(proxy, num_pools=2, maxsize=pool_size)
        else:
            self._pool = urllib3.PoolManager(num_pools=2, maxsize=pool_size)

    def request(self, method: str, url: str, body: bytes, headers: Mapping[str, str]) -> HttpAnswer:
        """Send one request and read the whole answer; never retries, never follows redirects.

        Raises:
            ProviderUnavailable: The request was not written whole: the provider cannot have
                taken it.
            ProviderOutcomeUnknown: The request was written whole, and then the answer did not
                come (a timeout, a reset, a closed connection).
        """
        sent = _WrittenBody(body)
        try:
            response = self._pool.request(
                method,
                url,
                body=sent,
                headers={**headers, "Content-Length": str(len(body))},
                timeout=self._timeout,
                retries=False,
                redirect=False,
            )
        except (transport_errors.HTTPError, OSError) as exc:
            if not sent.written:
                if isinstance(exc, transport_errors.ConnectTimeoutError):
                    # Includes a refused connection (NewConnectionError).
                    problem = f"did not accept a connection: {_reason(exc)}"
                else:
                    problem = f"connection failed before the request was sent whole: {_reason(exc)}"
                raise ProviderUnavailable(f"{self.provider} {problem}") from None
            if isinstance(exc, transport_errors.ReadTimeoutError):
                raise ProviderOutcomeUnknown(
                    f"{self.provider} did not answer in time after the request was sent"
                ) from None
            raise ProviderOutcomeUnknown(
                f"{self.provider} request failed after it was sent: {_reason(exc)}"
            ) from None
        return HttpAnswer(response.status, response.headers, response.data)

    def close(self) -> None:
        """Close the pooled connections."""
        self._pool.clear()


def judge_answer(
    provider: str,
    answer: HttpAnswer,
    detail: str,
    now: Callable[[], float] = time.time,
) -> None:
    """Raise the error an answer that is not a 2xx stands for; return on a 2xx.

    The classes, with the providers' own words, are in ``docs/guarantees.md``: only 429 is
    documented by both providers as not processed, so only 429 is retried (after the wait the
    provider asks for); another 4xx is a refusal; every other answer (3xx, 500, 502, 503, 504,
    ...) may follow a request the provider accepted, so its outcome is unknown.

    Args:
        provider: The provider's name, for the message.
        answer: The provider's answer.
        detail: What the provider said, from its error document, for the message.
        now: The clock, for a ``Retry-After`` or ``X-RateLimit-Reset`` given as a moment.

    Raises:
        ProviderUnavailable: 429.
        ProviderRejected: Another 4xx.
        ProviderOutcomeUnknown: Anything else that is not a 2xx.
    """
    status = answer.status
    if 200 <= status < 300:
        return
    said = f": {detail}" if detail else ""
    if status == 429:
        raise ProviderUnavailable(
            f"{provider} answered 429 (not processed){said}",
            retry_after=retry_after_seconds(answer.headers, now),
        )
    if 400 <= status < 500:
        raise ProviderRejected(f"{provider} refused the message ({status}){said}")
    raise ProviderOutcomeUnknown(
        f"{provider} answered {status}, which does not say whether it took the message{said}"
    )


def retry_after_seconds(
    headers: Mapping[str, str], now: Callable[[], float] = time.time
) -> float | None:
    """Seconds to wait before a retry, as the provider asked, or ``None`` when it did not say.

    ``Retry-After`` is read as delta-seconds or an HTTP date (RFC 9110, 10.2.3); without it,
    SendGrid's ``X-RateLimit-Reset`` (the Unix time the rate limit resets).
    """
    value = (headers.get("Retry-After") or "").strip()
    if value:
        if value.isdigit():
            return float(value)
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return max(0.0, moment.timestamp() - now())
    reset = (headers.get("X-RateLimit-Reset") or "").strip()
    if reset.isdigit():
        return max(0.0, int(reset) - now())
    return None


def _reason(exc: BaseException) -> str:
    """The transport's reason for a failure, naming the host and port, never the headers."""
    reason = getattr(exc, "reason", None) or exc
    return str(reason).replace("HTTPConnectionPool", "pool").replace("HTTPSConnectionPool", "pool")
