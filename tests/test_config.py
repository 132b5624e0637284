"""Configuration: defaults, file and environment layers, aliases, and one-line errors."""

from pathlib import Path

import pytest

from airbourne import config
from airbourne.config import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "airbourne.toml"
    path.write_text(text)
    return path


def test_defaults_are_the_embedded_setup(tmp_path):
    cfg = config.load(environ={"AIRBOURNE_SERVER_DATA_DIR": str(tmp_path)})
    assert [s.port for s in cfg.services.values()] == [3001, 3002, 3003, 3004, 3005]
    assert cfg.services["flights"].host == "127.0.0.1"
    assert cfg.services["flights"].url == "http://127.0.0.1:3002"
    assert cfg.services["auth"].database_url == f"sqlite:///{tmp_path}/auth.db"
    assert cfg["broker"]["url"] == "memory://"
    assert not cfg.production


def test_file_then_environment_override(tmp_path):
    path = write(tmp_path, '[auth]\nport = 4001\n[database]\nurl = "mysql://root@db/air"\n')
    cfg = config.load(path, environ={"AIRBOURNE_AUTH_PORT": "5001"})
    assert cfg.services["auth"].port == 5001
    assert cfg.services["booking"].database_url == "mysql://root@db/air"


def test_service_may_have_its_own_database_and_url(tmp_path):
    path = write(tmp_path, '[booking]\ndatabase_url = "mysql://root@db/booking"\n'
                           '[flights]\nurl = "http://flights.internal:80/"\n')
    cfg = config.load(path, environ={})
    assert cfg.services["booking"].database_url == "mysql://root@db/booking"
    assert cfg.services["auth"].database_url.startswith("sqlite:///")
    assert cfg.services["flights"].url == "http://flights.internal:80"


def test_old_platform_environment_names(tmp_path):
    cfg = config.load(environ={
        "MESSAGE_BROKER_URL": "amqp://guest:guest@rabbit/",
        "EXCHANGE_NAME": "AIRLINE_BOOKING",
        "REMINDER_BINDING_KEY": "REMINDER_SERVICE",
        "JWT_KEY": "s3cret",
        "FLIGHT_SERVICE_PATH": "http://flights-service:3002",
    })
    assert cfg["broker"]["url"] == "amqp://guest:guest@rabbit/"
    assert cfg["broker"]["exchange"] == "AIRLINE_BOOKING"
    assert cfg["broker"]["reminder_binding_key"] == "REMINDER_SERVICE"
    assert cfg["auth"]["jwt_secret"] == "s3cret"
    assert cfg.services["flights"].url == "http://flights-service:3002"


def test_listening_on_all_interfaces_is_reached_on_loopback(tmp_path):
    cfg = config.load(environ={"AIRBOURNE_SERVER_HOST": "0.0.0.0"})
    assert cfg.services["booking"].host == "0.0.0.0"
    assert cfg.services["booking"].url == "http://127.0.0.1:3003"


@pytest.mark.parametrize(
    "text, message",
    [
        ("[nope]\nx = 1\n", "unknown section [nope]"),
        ("[auth]\nprot = 1\n", "unknown key auth.prot"),
        ('[auth]\nport = "x"\n', "auth.port must be int"),
        ("[auth]\nport = 70000\n", "auth.port must be between 0 and 65535"),
        ("[auth\n", "is not valid TOML"),
        ('[server]\nenvironment = "staging"\n', "server.environment must be"),
        ("[database]\npool_size = 0\n", "database.pool_size must be at least 1"),
        ("[reminder]\nsend_interval_seconds = 0\n", "reminder.send_interval_seconds must be positive"),
        ("[booking]\noutbox_interval_seconds = -1\n", "booking.outbox_interval_seconds must be positive"),
        ("[server]\nkeep_alive_seconds = 0\n", "server.keep_alive_seconds must be positive"),
        ("[booking]\noutbox_keep_days = 0\n", "booking.outbox_keep_days must be positive"),
        ("[broker]\nprefetch = 0\n", "broker.prefetch must be at least 1, got 0"),
        ("[reminder]\nmax_attempts = 0\n", "reminder.max_attempts must be at least 1"),
        ("[reminder]\nsend_concurrency = -2\n", "reminder.send_concurrency must be at least 1"),
        ("[reminder]\nretry_base_seconds = -1\n", "reminder.retry_base_seconds must be zero or more"),
        ("[auth]\ntoken_lifetime_seconds = 0\n", "auth.token_lifetime_seconds must be positive"),
        ("[broker]\nreconnect_max_seconds = 0\n", "broker.reconnect_max_seconds must be positive"),
        ("[gateway]\nupstream_timeout_seconds = 0\n", "gateway.upstream_timeout_seconds must be positive"),
        ("[mail]\nsmtp_timeout_seconds = -5\n", "mail.smtp_timeout_seconds must be positive"),
        ("[database]\nbusy_timeout_seconds = -1\n", "database.busy_timeout_seconds must be zero or more"),
        ("[booking]\nreminder_before_departure_hours = -24\n",
         "booking.reminder_before_departure_hours must be zero or more"),
    ],
)
def test_bad_files_give_one_line_reasons(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")) as info:
        config.load(write(tmp_path, text), environ={})
    assert "\n" not in str(info.value)


def test_bad_environment_value_names_the_key():
    with pytest.raises(ConfigError, match="gateway.port must be int, got 'abc'"):
        config.load(environ={"AIRBOURNE_GATEWAY_PORT": "abc"})


def test_missing_file():
    with pytest.raises(ConfigError, match="configuration file not found"):
        config.load("/nonexistent/airbourne.toml", environ={})


def test_production_requires_a_jwt_secret(tmp_path):
    path = write(tmp_path, '[server]\nenvironment = "production"\n')
    with pytest.raises(ConfigError, match="auth.jwt_secret is required in production"):
        config.load(path, environ={})
    cfg = config.load(path, environ={"AIRBOURNE_AUTH_JWT_SECRET": "x" * 40})
    assert cfg.production


def test_production_example_is_valid():
    example = Path(__file__).parent.parent / "config" / "production.example.toml"
    cfg = config.load(example, environ={"AIRBOURNE_AUTH_JWT_SECRET": "x" * 40})
    assert cfg.services["gateway"].host == "0.0.0.0"
    assert cfg.services["auth"].host == "127.0.0.1"
    assert cfg.services["booking"].database_url.startswith("mysql://")


def test_data_dir_from_its_short_environment_name(tmp_path):
    cfg = config.load(environ={"AIRBOURNE_DATA_DIR": str(tmp_path / "here")})
    assert cfg.data_dir == tmp_path / "here"
    assert cfg.services["flights"].database_url == f"sqlite:///{tmp_path}/here/flights.db"
