"""The message's send state: its statuses and the transitions between them.

The store checks every status change against this table before it writes, and its schema
refuses any status outside ``MessageStatus`` (a CHECK constraint in each dialect). The table
holds the transitions the code makes, and nothing else: ``queued -> deferred`` is made by the
claim (quiet hours, a daily cap: ``delivery/rules.py``), ``deferred -> queued`` by the delivery
step once the message may go (``NotificationStore.release_deferred``).
"""

from collections.abc import Mapping
from enum import StrEnum

from darwin_notify_assets.errors import InvalidTransition


class MessageStatus(StrEnum):
    """Mirror of the ``message.status`` column."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"
    SUPPRESSED = "suppressed"
    RENDER_FAILED = "render_failed"
    #: Held by the claim until ``deferred_until`` (quiet hours, a daily cap); never final.
    DEFERRED = "deferred"


#: What rendering may create a message as.
INITIAL_STATUSES = frozenset(
    {MessageStatus.QUEUED, MessageStatus.SUPPRESSED, MessageStatus.RENDER_FAILED}
)

#: Allowed transitions, from one status to the statuses it may become. A claim moves
#: ``queued -> sending`` before the provider is called; its outcome moves it on once.
TRANSITIONS: Mapping[MessageStatus, frozenset[MessageStatus]] = {
    # suppressed: an opt-out or suppression that arrived after rendering, found at the claim.
    # deferred: due inside the recipient's quiet hours or over a daily cap, found at the claim
    # (instead of ``sending``: a message in ``sending`` is always one going to the provider).
    MessageStatus.QUEUED: frozenset(
        {MessageStatus.SENDING, MessageStatus.SUPPRESSED, MessageStatus.DEFERRED}
    ),
    # Once ``deferred_until`` has passed: queued again, by a conditional update, and claimed
    # (once) like any queued message.
    MessageStatus.DEFERRED: frozenset({MessageStatus.QUEUED}),
    # ``sending -> queued`` only for a claim never handed to the provider (``requested_at``
    # unset): it provably reached no provider.
    MessageStatus.SENDING: frozenset(
        {MessageStatus.SENT, MessageStatus.FAILED, MessageStatus.UNKNOWN, MessageStatus.QUEUED}
    ),
    # Only on evidence: a webhook event carrying our message id (sent), or a person who
    # checked with the provider and decided (``darwin-notify resolve``: sent or failed).
    MessageStatus.UNKNOWN: frozenset({MessageStatus.SENT, MessageStatus.FAILED}),
}

#: Transitions out of a final status that only evidence makes (the provider's events, or a
#: person's decision recorded with who and why), never the pipeline by itself.
EVIDENCE_TRANSITIONS = frozenset(
    {(MessageStatus.UNKNOWN, MessageStatus.SENT), (MessageStatus.UNKNOWN, MessageStatus.FAILED)}
)

#: Statuses the pipeline never moves a message on from by itself: nothing is left to do.
FINAL_STATUSES = frozenset(
    {
        MessageStatus.SENT,
        MessageStatus.FAILED,
        MessageStatus.UNKNOWN,
        MessageStatus.SUPPRESSED,
        MessageStatus.RENDER_FAILED,
    }
)


def is_allowed(current: MessageStatus, new: MessageStatus) -> bool:
    return new in TRANSITIONS.get(current, frozenset())


def check_transition(current: MessageStatus, new: MessageStatus) -> None:
    """Raise InvalidTransition unless the table allows ``current -> new``."""
    if not is_allowed(current, new):
        allowed = ", ".join(sorted(TRANSITIONS.get(current, ()))) or "nothing"
        raise InvalidTransition(
            f"{current} -> {new} is not an allowed transition ({current} may become {allowed})"
        )


def check_initial(status: MessageStatus) -> None:
    """Raise InvalidTransition unless a message may be created in ``status``."""
    if status not in INITIAL_STATUSES:
        raise InvalidTransition(
            f"a message cannot be created as {status} (only {', '.join(sorted(INITIAL_STATUSES))})"
        )
