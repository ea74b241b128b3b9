"""The package's exceptions: one base, then permanent vs transient by cause."""


class DarwinNotifyError(Exception):
    """Base of every error darwin-notify raises on purpose."""


class ConfigurationError(DarwinNotifyError):
    """A setting is missing or wrong; nothing was attempted."""


class ReadOnlyViolation(DarwinNotifyError):
    """A connection that must be read-only was not, or a write was attempted through it."""


class ScheduleError(DarwinNotifyError):
    """A notification schedule is invalid (unknown column, operator, table or template)."""


class InvalidTransition(DarwinNotifyError):
    """A message was not in the state a transition requires."""


class ProviderError(DarwinNotifyError):
    """A provider refused or failed a request."""

    #: ``True`` when the provider is known not to have accepted the message, so a retry
    #: cannot lead to a second delivery.
    retryable: bool = False


class ProviderRejected(ProviderError):
    """The provider answered that it will not take this message (4xx other than 429)."""


class ProviderRefusedRecipient(ProviderRejected):
    """The provider will not take the message because of its recipient (an address on its
    denylist after a bounce, a spam report or an unsubscribe, or an invalid address): another
    provider must not carry it either, so it never fails over."""


class ProviderUnavailable(ProviderError):
    """The provider did not take the message this time, and a retry cannot send it twice.

    Either its answer is one its documentation says was not processed (429), or the request
    never reached it whole (no connection, or the connection failed while it was written).

    Attributes:
        retry_after: Seconds the provider asked to wait before a retry (``Retry-After``), or
            ``None`` when it did not say.
    """

    retryable = True

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class ProviderOutcomeUnknown(ProviderError):
    """The request may or may not have been accepted: a timeout or a broken connection after
    the request was written, or an answer whose meaning the provider does not document as
    "not accepted" (500, 502, 503, 504, ...)."""


class ReplicaBehind(DarwinNotifyError):
    """The replica has not yet applied a window's end plus grace; retry once it has."""

    def __init__(self, message: str, behind_seconds: float | None):
        super().__init__(message)
        self.behind_seconds = behind_seconds
