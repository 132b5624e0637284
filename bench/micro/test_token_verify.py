"""Verifying an access token: the gateway does it on every guarded request."""

from __future__ import annotations

from airbourne.tokens import Tokens


def test_verify_token(benchmark) -> None:
    tokens = Tokens("a benchmark secret, long enough for HS256", lifetime_seconds=3600)
    token = tokens.issue(7, "ada@example.com")

    claims = benchmark(tokens.verify, token)

    assert (claims.id, claims.email) == (7, "ada@example.com")
