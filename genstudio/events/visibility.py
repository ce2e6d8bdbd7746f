"""Who may see an event: the one rule that live delivery applies per subscriber.

It is the Python twin of the `job_events_select` policy (migration 0006_job_events_made_private) over the
job tables' own policies, and tests/test_events_visibility.py holds the two equal on every
combination. Live delivery reads each batch of events once, with each job's owner and
visibility as they are at that moment, and filters here per subscriber; replay reads the log
as the subscriber, and PostgreSQL applies the policy itself.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EventFacts:
    """What the rule needs to know about one event and its job, as they are now."""

    user_id: uuid.UUID | None  # the job's owner when the event happened
    kind: str
    recorded_visibility: str | None  # `deleted`: the job's visibility as it was deleted; `visibility`: the new one
    job_exists: bool
    owner: uuid.UUID | None  # the job's owner now (if it exists)
    visibility: str | None  # the job's visibility now (if it exists)


def may_see_job(facts: EventFacts, viewer: uuid.UUID | None) -> bool:
    """The job tables' SELECT policy: own, shared and ownerless jobs; nothing for `anon`."""
    if viewer is None or not facts.job_exists:
        return False
    return facts.owner == viewer or facts.visibility == "shared" or facts.owner is None


def may_see_event(facts: EventFacts, viewer: uuid.UUID | None) -> bool:
    """Whether `viewer` may read the event: they owned the job when it happened, or may see the
    job now; a `deleted` event also reaches everyone if the job was shared or ownerless, and
    the `visibility` event that made a shared job private reaches everyone (so that their
    feeds can drop it)."""
    if viewer is None:
        return False
    if facts.user_id is not None and facts.user_id == viewer:
        return True
    if facts.kind == "deleted" and (facts.user_id is None or facts.recorded_visibility == "shared"):
        return True
    if facts.kind == "visibility" and facts.recorded_visibility == "private":
        return True
    return may_see_job(facts, viewer)
