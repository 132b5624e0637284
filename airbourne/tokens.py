"""Access tokens: JWTs signed with HS256 and a shared secret.

The auth service issues them at sign-in; the gateway verifies them on every request without a
database call, so `Tokens.check` does only the signature, the JSON and a few comparisons:
the key and the claim rules are prepared once, in `__init__`. A client sends the same token
with every request for an hour, so `Tokens.verify` remembers the tokens it has accepted and
for those only compares the expiry with the clock.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from dataclasses import dataclass

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from airbourne.config import Config, ConfigError
from airbourne.http import ApiError

HEADER = "x-access-token"
"""The request header that carries a token (the old platform's name)."""

ALGORITHMS = ["HS256"]
LEEWAY_SECONDS = 5
"""Clock skew tolerated between the host that issued a token and the one verifying it."""
REMEMBERED = 10_000
"""Accepted tokens kept by `Tokens.verify`. Only a token with a valid signature gets in, so a
client cannot fill it with junk; when full, the oldest goes."""


class InvalidToken(Exception):
    """The token cannot be trusted; `reason` says why, in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Claims:
    id: int
    email: str
    expires: int
    """Expiry as seconds since the epoch (the `exp` claim)."""


class Tokens:
    def __init__(self, secret: str, lifetime_seconds: int = 3600) -> None:
        self._key = OctKey.import_key(secret)
        self._lifetime = lifetime_seconds
        self._header = {"alg": "HS256"}
        essential: jwt.ClaimsOption = {"essential": True}
        self._rules = jwt.JWTClaimsRegistry(
            leeway=LEEWAY_SECONDS, id=essential, email=essential, exp=essential
        )
        self._accepted: dict[str, Claims] = {}

    def issue(self, user_id: int, email: str) -> str:
        now = int(time.time())
        claims = {"id": user_id, "email": email, "iat": now, "exp": now + self._lifetime}
        return jwt.encode(self._header, claims, self._key, algorithms=ALGORITHMS)

    def verify(self, token: str) -> Claims:
        """The claims of `token`, checked in full the first time it is seen.

        Remembering an accepted token is safe because only time can change the outcome of
        `check`, and only the expiry can turn it from accepted to refused (a token whose
        `iat` or `nbf` lies in the future is refused, so never remembered).
        """
        claims = self._accepted.pop(token, None)
        if claims is None or time.time() > claims.expires + LEEWAY_SECONDS:
            claims = self.check(token)  # an expired token raises here and is forgotten
            if len(self._accepted) >= REMEMBERED:
                del self._accepted[next(iter(self._accepted))]
        self._accepted[token] = claims  # re-inserted: the most recently used goes last
        return claims

    def check(self, token: str) -> Claims:
        """The claims of `token` after checking its signature and claims, or `InvalidToken`."""
        try:
            claims = jwt.decode(token, self._key, algorithms=ALGORITHMS).claims
            self._rules.validate(claims)
        # joserfc lets a TypeError or ValueError through for some malformed headers
        # (`"crit": 5`): a malformed token all the same.
        except (JoseError, TypeError, ValueError) as exc:
            raise InvalidToken(_reason(exc)) from exc
        user_id, email = claims["id"], claims["email"]
        if isinstance(user_id, bool) or not isinstance(user_id, int) or user_id < 1:
            raise InvalidToken("claim 'id' must be a positive integer")
        if not isinstance(email, str):
            raise InvalidToken("claim 'email' must be a string")
        return Claims(id=user_id, email=email, expires=int(claims["exp"]))


def _reason(exc: Exception) -> str:
    if isinstance(exc, JoseError):
        return exc.description or exc.error.replace("_", " ")
    return "malformed token"


def load_secret(config: Config) -> str:
    """The signing secret: `auth.jwt_secret`, or in development one generated once into
    `data_dir/jwt_secret` (mode 0600) so that tokens outlive a restart.

    Several processes may start at once: each writes a candidate to a private temporary file
    and links it into place, which fails for all but the first; everyone then reads the
    winner.
    """
    configured = config["auth"]["jwt_secret"]
    if configured:
        return configured
    path = config.data_dir / "jwt_secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, candidate = tempfile.mkstemp(dir=path.parent, prefix=".jwt_secret.")
        try:
            with os.fdopen(descriptor, "w") as file:
                file.write(secrets.token_urlsafe(48))
            os.link(candidate, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(candidate)
    secret = path.read_text().strip()
    if not secret:
        raise ConfigError(f"{path} is empty: delete it to generate a new secret")
    return secret


def unauthorized(message: str, problem: str) -> ApiError:
    """401 naming the token header as the field at fault."""
    return ApiError(401, message, {"field": HEADER, "problem": problem})


def verified(tokens: Tokens, token: str) -> Claims:
    """The claims of `token`, or the 401 that says why it is refused."""
    try:
        return tokens.verify(token)
    except InvalidToken as exc:
        raise unauthorized(f"invalid token ({exc.reason})", exc.reason) from None
