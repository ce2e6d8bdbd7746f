"""Authentication failures, one type per thing a caller can do something about."""

from __future__ import annotations

from genstudio.errors import CallerError


class AuthError(CallerError):
    """Base of the authentication failures."""


class MissingToken(AuthError):
    """No `Authorization: Bearer` header."""


class InvalidToken(AuthError):
    """A bearer token that does not verify, has expired, or is meant for someone else."""


class InvalidCredentials(AuthError):
    """Wrong email or password; which of the two is not said."""


class LoginRateLimited(AuthError):
    def __init__(self, message: str, retry_after_seconds: int):
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class AccountExists(AuthError):
    """`genstudio user add` for an email that already has an account."""


class CsrfRejected(AuthError):
    """A cookie-authenticated unsafe request without this session's CSRF token, or from another site."""


class NoSuchAccount(AuthError):
    """`genstudio user passwd|delete` for an email without an account."""


class AccountGone(AuthError):
    """A valid token whose user has been deleted since it was issued."""


class SigningKeysUnavailable(AuthError):
    """The JWKS could not be fetched, so no asymmetric token can be checked right now."""
