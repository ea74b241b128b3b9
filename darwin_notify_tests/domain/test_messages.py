"""The table of allowed send-state transitions, on its own."""

import pytest

from darwin_notify_assets.domain.messages import (
    EVIDENCE_TRANSITIONS,
    FINAL_STATUSES,
    INITIAL_STATUSES,
    TRANSITIONS,
    MessageStatus,
    check_initial,
    check_transition,
    is_allowed,
)
from darwin_notify_assets.errors import InvalidTransition


def test_every_status_is_reached_from_a_status_a_message_is_created_in():
    reached, frontier = set(INITIAL_STATUSES), list(INITIAL_STATUSES)
    while frontier:
        for new in TRANSITIONS.get(frontier.pop(), ()):
            if new not in reached:
                reached.add(new)
                frontier.append(new)
    assert reached == set(MessageStatus)


def test_a_final_status_has_no_way_out_but_evidence_and_every_other_has_one():
    for status in MessageStatus:
        ways = {
            new for new in TRANSITIONS.get(status, ()) if (status, new) not in EVIDENCE_TRANSITIONS
        }
        assert bool(ways) == (status not in FINAL_STATUSES), status


def test_a_forbidden_transition_says_what_is_allowed():
    with pytest.raises(InvalidTransition, match=r"sent -> queued .* \(sent may become nothing\)"):
        check_transition(MessageStatus.SENT, MessageStatus.QUEUED)
    with pytest.raises(InvalidTransition, match="queued may become deferred, sending, suppressed"):
        check_transition(MessageStatus.QUEUED, MessageStatus.SENT)
    check_transition(MessageStatus.SENDING, MessageStatus.UNKNOWN)
    # Evidence resolves an unknown: the provider's event with our id (sent), or a person's
    # decision (sent or failed); never back into the send path.
    assert is_allowed(MessageStatus.UNKNOWN, MessageStatus.SENT)
    assert is_allowed(MessageStatus.UNKNOWN, MessageStatus.FAILED)
    assert not is_allowed(MessageStatus.UNKNOWN, MessageStatus.QUEUED)
    assert not is_allowed(MessageStatus.UNKNOWN, MessageStatus.SENDING)
    assert not is_allowed(MessageStatus.SUPPRESSED, MessageStatus.QUEUED)


def test_a_message_is_created_queued_or_already_decided():
    for status in (MessageStatus.QUEUED, MessageStatus.SUPPRESSED, MessageStatus.RENDER_FAILED):
        check_initial(status)
    with pytest.raises(InvalidTransition, match="cannot be created as sending"):
        check_initial(MessageStatus.SENDING)
