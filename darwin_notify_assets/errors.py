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


class ProviderUnavailable(ProviderError):
    """The provider said it did not take the message this time (429, 5xx before accepting)."""

    retryable = True


class ProviderOutcomeUnknown(ProviderError):
    """The request may or may not have been accepted (timeout, connection lost mid-request)."""


class ReplicaBehind(DarwinNotifyError):
    """The replica has not yet applied a window's end plus grace; retry once it has."""

    def __init__(self, message: str, behind_seconds: float | None):
        super().__init__(message)
        self.behind_seconds = behind_seconds
