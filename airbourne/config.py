"""Load and validate configuration.

Three layers, each overriding the one before: the packaged `default.toml`, an optional file
given with `--config`, and environment variables (`AIRBOURNE_<SECTION>_<KEY>`, plus the old
platform's names in `ALIASES`). The type of every key is the type of its default, so a typo
or a wrong type stops start-up with a one-line `ConfigError` instead of a surprise later.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

DEFAULTS_FILE = Path(__file__).with_name("default.toml")

SERVICE_NAMES = ("auth", "flights", "booking", "reminder", "gateway")

# Keys every service section accepts besides those listed in default.toml.
SERVICE_KEYS: dict[str, Any] = {"port": 0, "host": "", "url": "", "database_url": ""}

# Environment names of the old Node platform, kept so its deployment files keep working.
ALIASES: dict[str, tuple[str, str]] = {
    "AIRBOURNE_DATA_DIR": ("server", "data_dir"),
    "MESSAGE_BROKER_URL": ("broker", "url"),
    "EXCHANGE_NAME": ("broker", "exchange"),
    "REMINDER_BINDING_KEY": ("broker", "reminder_binding_key"),
    "JWT_KEY": ("auth", "jwt_secret"),
    "JWT_key": ("auth", "jwt_secret"),
    "FLIGHT_SERVICE_PATH": ("flights", "url"),
    "AUTH_SERVICE_PATH": ("auth", "url"),
    "BOOKING_SERVICE_PATH": ("booking", "url"),
    "REMINDER_SERVICE_PATH": ("reminder", "url"),
}


BOUNDS: dict[str, tuple[float, str]] = {
    # A count below one stops the work: no connection, no send, no message taken (a memory
    # broker with no prefetch slot never delivers).
    "database.pool_size": (1, "at least 1"),
    "broker.prefetch": (1, "at least 1"),
    "reminder.max_attempts": (1, "at least 1"),
    "reminder.send_concurrency": (1, "at least 1"),
    # A zero interval is a busy loop, a zero timeout fails every call, a zero lifetime issues
    # tokens that are already expired.
    "booking.outbox_interval_seconds": (0, "positive"),
    "booking.outbox_keep_days": (0, "positive"),
    "reminder.ticket_keep_days": (0, "positive"),
    "flights.reservation_keep_days": (0, "positive"),
    "reminder.send_interval_seconds": (0, "positive"),
    "server.keep_alive_seconds": (0, "positive"),
    "broker.reconnect_max_seconds": (0, "positive"),
    "auth.token_lifetime_seconds": (0, "positive"),
    "gateway.upstream_timeout_seconds": (0, "positive"),
    "mail.smtp_timeout_seconds": (0, "positive"),
    # Zero is meaningful: retry at once, never wait for the SQLite lock, remind at departure.
    "reminder.retry_base_seconds": (0, "zero or more"),
    "database.busy_timeout_seconds": (0, "zero or more"),
    "booking.reminder_before_departure_hours": (0, "zero or more"),
}
"""Numeric settings that only make sense in a range: the lowest value and how to say it."""


class ConfigError(Exception):
    """A configuration problem, with a message fit for one line on the terminal."""


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    host: str
    port: int
    url: str
    """Base URL other processes use to reach this service."""
    database_url: str
    options: Mapping[str, Any]
    """The remaining keys of the service's section (rate limits, intervals, ...)."""


@dataclass(frozen=True)
class Config:
    sections: Mapping[str, Mapping[str, Any]]
    services: Mapping[str, ServiceConfig]

    def __getitem__(self, section: str) -> Mapping[str, Any]:
        return self.sections[section]

    @property
    def data_dir(self) -> Path:
        return Path(self.sections["server"]["data_dir"])

    @property
    def production(self) -> bool:
        return self.sections["server"]["environment"] == "production"


def load(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    environ = os.environ if environ is None else environ
    sections = _read_toml(DEFAULTS_FILE)
    for name in SERVICE_NAMES:
        sections[name] = {**SERVICE_KEYS, **sections.get(name, {})}
    if path is not None:
        _merge(sections, _read_toml(Path(path)), origin=str(path))
    _merge(sections, _from_environ(sections, environ), origin="environment")
    return _build(sections)


def _read_toml(path: Path) -> dict[str, dict[str, Any]]:
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: [{section}] must be a table of keys")
    return data


def _merge(sections: dict[str, dict[str, Any]], update: Mapping[str, Any], origin: str) -> None:
    for section, values in update.items():
        if section not in sections:
            raise ConfigError(f"{origin}: unknown section [{section}]")
        for key, value in values.items():
            if key not in sections[section]:
                raise ConfigError(f"{origin}: unknown key {section}.{key}")
            sections[section][key] = _coerce(value, sections[section][key], f"{section}.{key}")


def _coerce(value: Any, default: Any, name: str) -> Any:
    expected = type(default)
    if isinstance(value, str) and expected is not str:
        try:
            if expected is bool:
                if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("1", "true", "yes")
            return expected(value)
        except ValueError:
            raise ConfigError(f"{name} must be {expected.__name__}, got {value!r}") from None
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not expected:
        raise ConfigError(f"{name} must be {expected.__name__}, got {value!r}")
    return value


def _from_environ(sections: Mapping[str, Mapping[str, Any]], environ: Mapping[str, str]) -> dict:
    found: dict[str, dict[str, Any]] = {}
    for alias, (section, key) in ALIASES.items():
        if alias in environ:
            found.setdefault(section, {})[key] = environ[alias]
    for section, values in sections.items():
        for key in values:
            name = f"AIRBOURNE_{section}_{key}".upper()
            if name in environ:
                found.setdefault(section, {})[key] = environ[name]
    return found


def _build(sections: dict[str, dict[str, Any]]) -> Config:
    server = sections["server"]
    if server["environment"] not in ("development", "production"):
        raise ConfigError("server.environment must be 'development' or 'production'")
    data_dir = Path(server["data_dir"]).expanduser().resolve()
    server["data_dir"] = str(data_dir)
    services = {}
    for name in SERVICE_NAMES:
        section = sections[name]
        port = section["port"]
        if not 0 <= port <= 65535:
            raise ConfigError(f"{name}.port must be between 0 and 65535, got {port}")
        host = section["host"] or server["host"]
        url = (section["url"] or f"http://{_client_host(host)}:{port}").rstrip("/")
        database_url = section["database_url"] or sections["database"]["url"]
        database_url = database_url.format(service=name, data_dir=data_dir)
        options = {k: v for k, v in section.items() if k not in SERVICE_KEYS}
        services[name] = ServiceConfig(name, host, port, url, database_url, options)
    for key, (lowest, words) in BOUNDS.items():
        section, name = key.split(".")
        value = sections[section][name]
        if value < lowest or (words == "positive" and value == lowest):
            raise ConfigError(f"{key} must be {words}, got {value}")
    if server["environment"] == "production" and not sections["auth"]["jwt_secret"]:
        raise ConfigError(
            "auth.jwt_secret is required in production (set AIRBOURNE_AUTH_JWT_SECRET)"
        )
    return Config(sections=sections, services=services)


def _client_host(listen_host: str) -> str:
    """The address a client on this host uses to reach a listener bound to `listen_host`."""
    return "127.0.0.1" if listen_host in ("0.0.0.0", "::", "") else listen_host
