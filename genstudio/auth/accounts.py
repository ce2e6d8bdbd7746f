"""Local accounts, for deployments without Supabase: argon2 password hashes in `auth.users`."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from genstudio.auth.errors import AccountExists, InvalidCredentials, NoSuchAccount
from genstudio.db.queries import load_queries

QUERIES = load_queries("accounts")

_hasher = PasswordHasher()
# Verifying against this when the email is unknown makes both failures take as long.
_DUMMY_HASH = _hasher.hash("genstudio: no such account")


@dataclass(frozen=True)
class Account:
    id: uuid.UUID
    email: str


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    local, at, domain = email.partition("@")
    if not (local and at and domain) or len(email) > 320 or any(c.isspace() for c in email):
        raise ValueError(f"{email!r} is not an email address")
    return email


@dataclass(frozen=True)
class AccountSummary:
    id: uuid.UUID
    email: str | None
    created_at: datetime
    last_sign_in_at: datetime | None
    jobs: int


def check_password(password: str, min_length: int) -> None:
    if len(password) < min_length:
        raise ValueError(f"the password must be at least {min_length} characters long (GENSTUDIO_MIN_PASSWORD_LENGTH)")


async def add_account(conn: psycopg.AsyncConnection, email: str, password: str, *, min_length: int = 12) -> Account:
    email = normalise_email(email)
    check_password(password, min_length)
    password_hash = await asyncio.to_thread(_hasher.hash, password)
    try:
        async with conn.transaction():
            cur = await conn.execute(QUERIES["insert_user"], {"email": email, "password_hash": password_hash})
            row = await cur.fetchone()
    except psycopg.errors.UniqueViolation:
        raise AccountExists(f"an account for {email} already exists") from None
    return Account(_column(row, "id"), email)


async def list_accounts(conn: psycopg.AsyncConnection) -> list[AccountSummary]:
    cur = await conn.execute(QUERIES["list_users"])
    return [AccountSummary(*row) if not isinstance(row, dict) else AccountSummary(**row) for row in await cur.fetchall()]


async def set_password(conn: psycopg.AsyncConnection, email: str, password: str, *, min_length: int = 12) -> Account:
    email = normalise_email(email)
    check_password(password, min_length)
    password_hash = await asyncio.to_thread(_hasher.hash, password)
    row = await (await conn.execute(QUERIES["set_password"], {"email": email, "password_hash": password_hash})).fetchone()
    if row is None:
        raise NoSuchAccount(f"no account for {email}")
    return Account(_column(row, "id"), email)


async def delete_account(conn: psycopg.AsyncConnection, email: str) -> Account:
    email = normalise_email(email)
    row = await (await conn.execute(QUERIES["delete_user"], {"email": email})).fetchone()
    if row is None:
        raise NoSuchAccount(f"no account for {email}")
    return Account(_column(row, "id"), email)


async def find_account(conn: psycopg.AsyncConnection, email: str) -> Account | None:
    row = await (await conn.execute(QUERIES["find_by_email"], {"email": normalise_email(email)})).fetchone()
    return Account(_column(row, "id"), _column(row, "email")) if row else None


async def authenticate(conn: psycopg.AsyncConnection, email: str, password: str) -> Account:
    """The account whose password this is; hashing runs off the event loop (it is slow on purpose)."""
    try:
        email = normalise_email(email)
    except ValueError:
        email = ""
    row = await (await conn.execute(QUERIES["find_by_email"], {"email": email})).fetchone() if email else None
    stored = _column(row, "encrypted_password") if row else None
    if not await asyncio.to_thread(_password_matches, stored or _DUMMY_HASH, password) or not stored:
        raise InvalidCredentials("the email or the password is wrong")
    new_hash = await asyncio.to_thread(_hasher.hash, password) if _hasher.check_needs_rehash(stored) else None
    await conn.execute(QUERIES["record_sign_in"], {"id": _column(row, "id"), "new_hash": new_hash})
    return Account(_column(row, "id"), email)


def _password_matches(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def _column(row, name: str):
    # The API's pool hands out dict rows, the CLI's plain connection tuples.
    if isinstance(row, dict):
        return row[name]
    return row[{"id": 0, "email": 1, "encrypted_password": 2}[name]]
