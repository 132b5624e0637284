"""Field checks for request bodies and query strings.

Each function takes the mapping and the field name, returns the clean value or raises a 400
`ApiError` that names the field. `MISSING` marks an optional field that was not sent, so a
PATCH can tell "absent" from "set to null".
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from starlette.requests import Request

from airbourne.http import bad_request
from airbourne.mail.base import is_address

MAX_INT = 2**31 - 1
MISSING: Any = object()

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _get(data: Mapping[str, Any], name: str, required: bool, default: Any) -> Any:
    if name not in data or data[name] is None:
        if required:
            raise bad_request(name, "is required")
        return default
    return data[name]


def integer(
    data: Mapping[str, Any],
    name: str,
    *,
    minimum: int = 1,
    maximum: int = MAX_INT,
    required: bool = True,
    default: Any = MISSING,
    text: bool = False,
) -> Any:
    """An integer within [minimum, maximum]. With `text` (query strings, path parameters,
    headers) it is written in digits; in a JSON body a string is a mistyped field."""
    value = _get(data, name, required, default)
    if value is default and not required:
        return value
    if text and isinstance(value, str) and re.fullmatch(r"-?\d{1,19}", value.strip()):
        value = int(value)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(name, "must be an integer")
    if not minimum <= value <= maximum:
        raise bad_request(name, f"must be between {minimum} and {maximum}")
    return value


def string(
    data: Mapping[str, Any],
    name: str,
    *,
    max_length: int = 255,
    min_length: int = 1,
    required: bool = True,
    default: Any = MISSING,
) -> Any:
    value = _get(data, name, required, default)
    if value is default and not required:
        return value
    if not isinstance(value, str):
        raise bad_request(name, "must be a string")
    if "\x00" in value:
        raise bad_request(name, "must not contain NUL characters")
    if len(value.strip()) < min_length:
        raise bad_request(name, "must not be empty" if min_length == 1 else
                          f"must be at least {min_length} characters")
    if len(value) > max_length:
        raise bad_request(name, f"must be at most {max_length} characters")
    return value


def email(data: Mapping[str, Any], name: str = "email") -> str:
    """One address an email can be sent to: the pattern alone lets `a,b@example.com` (two
    recipients in a `To` header) through, so the mail package has the last word."""
    value = string(data, name, max_length=254).strip().lower()
    if not _EMAIL.match(value) or not is_address(value):
        raise bad_request(name, "must be a valid email address")
    return value


def timestamp(
    data: Mapping[str, Any], name: str, *, required: bool = True, default: Any = MISSING
) -> Any:
    """An ISO 8601 time, with or without zone (naive means UTC), as a naive UTC datetime."""
    value = _get(data, name, required, default)
    if value is default and not required:
        return value
    if not isinstance(value, str):
        raise bad_request(name, "must be an ISO 8601 date-time string")
    parsed = _iso(value.strip())
    if parsed is None:
        raise bad_request(name, "must be an ISO 8601 date-time string")
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    if not 1970 <= parsed.year <= 9999:
        raise bad_request(name, "must be a date between the years 1970 and 9999")
    return parsed


_LOOSE_TIME = re.compile(
    r"(\d{4}-\d{2}-\d{2})[T ](\d{1,2}):(\d{2})(?::(\d{2})(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?"
)


def _iso(text: str) -> datetime | None:
    """ISO 8601, or the looser form the old platform's clients send: the seed's k6 script
    writes `2025-10-10T0:00:00Z` (hour not padded) and arrivals at `T24:00`/`T25:00`, which
    JavaScript and MySQL read as the next day. So an hour past 23 rolls into the next day."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    match = _LOOSE_TIME.fullmatch(text)
    if match is None:
        return None
    day, hours, minutes, seconds, fraction, zone = match.groups()
    if int(minutes) > 59 or int(seconds or 0) > 59 or int(hours) > 47:
        return None
    try:
        start = datetime.fromisoformat(f"{day}T00:00:00{(zone or '').replace('Z', '+00:00')}")
    except ValueError:
        return None
    return start + timedelta(hours=int(hours), minutes=int(minutes), seconds=int(seconds or 0),
                             microseconds=round(float(fraction or 0) * 1_000_000))


def path_id(request: Request, name: str = "id") -> int:
    """The integer id in the URL path; `/city/abc` is a 400, not a 404."""
    return integer(request.path_params, name, text=True)
