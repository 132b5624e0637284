"""Access tokens: what `Tokens.verify` accepts and refuses, and where the secret comes from."""

from __future__ import annotations

import base64
import json
import stat
import time

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey

from airbourne import tokens as tokens_module
from airbourne.tokens import LEEWAY_SECONDS, Claims, InvalidToken, Tokens, load_secret
from support import make_config

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
tokens = Tokens(SECRET, 3600)


def _segment(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _signed(claims: dict, secret: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode({"alg": alg}, claims, OctKey.import_key(secret), algorithms=[alg])


def _claims(**changes: object) -> dict:
    now = int(time.time())
    claims = {"id": 7, "email": "ada@example.com", "iat": now, "exp": now + 60}
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def test_round_trip() -> None:
    before = int(time.time())
    claims = tokens.verify(tokens.issue(7, "ada@example.com"))
    assert claims.id == 7 and claims.email == "ada@example.com"
    assert before + 3600 <= claims.expires <= int(time.time()) + 3600
    assert isinstance(claims, Claims)


def test_issued_token_carries_id_email_iat_exp() -> None:
    token = tokens.issue(7, "ada@example.com")
    decoded = jwt.decode(token, OctKey.import_key(SECRET), algorithms=["HS256"])
    assert decoded.header["alg"] == "HS256"
    assert set(decoded.claims) == {"id", "email", "iat", "exp"}
    assert decoded.claims["exp"] - decoded.claims["iat"] == 3600


def test_expired_token_is_refused() -> None:
    expired = Tokens(SECRET, -60).issue(7, "ada@example.com")
    with pytest.raises(InvalidToken, match="expired"):
        tokens.verify(expired)


def test_a_token_just_past_its_expiry_beyond_the_leeway_is_refused() -> None:
    with pytest.raises(InvalidToken, match="expired"):
        tokens.verify(_signed(_claims(exp=int(time.time()) - 10)))


def test_an_accepted_token_is_refused_once_it_expires(monkeypatch) -> None:
    fresh = Tokens(SECRET, 60)
    token = fresh.issue(7, "ada@example.com")
    assert fresh.verify(token).id == 7
    assert fresh.verify(token).id == 7  # the second time from memory
    later = time.time() + 60 + LEEWAY_SECONDS + 1
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(InvalidToken, match="expired"):
        fresh.verify(token)


def test_verify_checks_a_token_once_and_forgets_the_least_recently_used(monkeypatch) -> None:
    monkeypatch.setattr(tokens_module, "REMEMBERED", 2)
    fresh = Tokens(SECRET, 3600)
    checked: list[str] = []
    check = fresh.check
    monkeypatch.setattr(fresh, "check", lambda token: checked.append(token) or check(token))
    a, b, c = (fresh.issue(user, f"user{user}@example.com") for user in (1, 2, 3))
    for token in (a, b, a, c, a, b):
        fresh.verify(token)
    assert checked == [a, b, c, b]  # c pushed out b, the least recently used


def test_tampered_signature_is_refused() -> None:
    header, payload, signature = tokens.issue(7, "ada@example.com").split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    with pytest.raises(InvalidToken):
        tokens.verify(f"{header}.{payload}.{flipped}")


def test_tampered_payload_is_refused() -> None:
    header, _, signature = tokens.issue(7, "ada@example.com").split(".")
    with pytest.raises(InvalidToken):
        tokens.verify(f"{header}.{_segment(_claims(id=1))}.{signature}")


def test_token_signed_with_another_secret_is_refused() -> None:
    other = Tokens("another-secret-just-as-long-as-the-first-one", 3600)
    with pytest.raises(InvalidToken):
        tokens.verify(other.issue(7, "ada@example.com"))


@pytest.mark.parametrize(
    "garbage",
    ["", "garbage", "a.b.c", "a.b", "....", "é.é.é", "x" * 5000,
     f"{_segment({'alg': 'HS256', 'crit': 5})}.{_segment({})}.AAAA",
     f"{_segment([1])}.{_segment({})}.AAAA"],
)
def test_garbage_is_refused(garbage: str) -> None:
    with pytest.raises(InvalidToken):
        tokens.verify(garbage)


def test_alg_none_is_refused() -> None:
    unsigned = f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(_claims())}."
    with pytest.raises(InvalidToken):
        tokens.verify(unsigned)


def test_other_algorithm_with_the_same_secret_is_refused() -> None:
    with pytest.raises(InvalidToken):
        tokens.verify(_signed(_claims(), alg="HS512"))


@pytest.mark.parametrize("missing", ["id", "email", "exp"])
def test_missing_claim_is_refused(missing: str) -> None:
    with pytest.raises(InvalidToken):
        tokens.verify(_signed(_claims(**{missing: None})))


@pytest.mark.parametrize(
    "changes",
    [{"id": "7"}, {"id": True}, {"id": 0}, {"id": 1.5}, {"email": 5}, {"exp": "soon"},
     {"iat": int(time.time()) + 3600}],
)
def test_invalid_claim_is_refused(changes: dict) -> None:
    with pytest.raises(InvalidToken):
        tokens.verify(_signed(_claims(**changes)))


def test_a_non_object_payload_is_refused() -> None:
    key = OctKey.import_key(SECRET)
    from joserfc import jws

    token = jws.serialize_compact({"alg": "HS256"}, b"[1, 2]", key, algorithms=["HS256"])
    with pytest.raises(InvalidToken):
        tokens.verify(token)


def test_load_secret_prefers_the_configured_secret(tmp_path) -> None:
    config = make_config(tmp_path, AIRBOURNE_AUTH_JWT_SECRET="configured-secret")
    assert load_secret(config) == "configured-secret"
    assert not (config.data_dir / "jwt_secret").exists()


def test_load_secret_creates_the_secret_once_and_reuses_it(tmp_path) -> None:
    config = make_config(tmp_path)
    first = load_secret(config)
    path = config.data_dir / "jwt_secret"
    assert path.read_text() == first and len(first) >= 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret(make_config(tmp_path)) == first
    assert [entry.name for entry in config.data_dir.iterdir()] == ["jwt_secret"]


def test_tokens_outlive_a_restart_with_the_generated_secret(tmp_path) -> None:
    token = Tokens(load_secret(make_config(tmp_path)), 3600).issue(7, "ada@example.com")
    assert Tokens(load_secret(make_config(tmp_path)), 3600).verify(token).id == 7
