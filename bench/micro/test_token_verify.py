"""Verifying an access token: the gateway does it on every guarded request. `verify` checks a
token in full once and remembers it (`test_verify_token`); `check` is that first time."""

from __future__ import annotations

import pytest

from airbourne.tokens import Tokens


@pytest.mark.parametrize("method", ["verify", "check"])
def test_verify_token(benchmark, method: str) -> None:
    tokens = Tokens("a benchmark secret, long enough for HS256", lifetime_seconds=3600)
    token = tokens.issue(7, "ada@example.com")

    claims = benchmark(getattr(tokens, method), token)

    assert (claims.id, claims.email) == (7, "ada@example.com")
