"""What can go wrong with a job request, one type per failure a caller can act on.

The API maps each type to an HTTP status once (genstudio.api.errors); the service only says
what happened, in words a caller can use.
"""

from __future__ import annotations

from genstudio.errors import CallerError


class JobError(CallerError):
    """Base of the job failures."""


class JobNotFound(JobError):
    """No such job, or one the caller may not see: the two are indistinguishable on purpose."""


class NotJobOwner(JobError):
    """The caller sees the job (shared or ownerless) but only its owner may change it."""


class InvalidTransition(JobError):
    """The requested status change is not in the transition table."""


class ComfyJobIdTaken(JobError):
    """Another user's job already records this ComfyUI prompt id."""


class JobRecordedDifferently(JobError):
    """The caller re-posted its own comfy_job_id with other values: not a retry."""


class InvalidCursor(JobError):
    """A pagination cursor that this server did not issue, or that was altered."""


class InvalidRequest(JobError):
    """A request that passes validation field by field but contradicts itself."""
