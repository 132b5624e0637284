"""The `airbourne` command: `serve` runs services, `users` is for operators."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Awaitable, Callable, Sequence

from airbourne import config as config_module
from airbourne.config import Config, ConfigError
from airbourne.runtime import StartupError, bind_all, migrate, serve
from airbourne.workers import run as run_workers

DESCRIPTION = """\
Airbourne: a flight-booking platform. Each service (auth, flights, booking, reminder,
gateway) is an HTTP app on its own port; one process runs any of them on a shared runtime.
"""


def _parser() -> argparse.ArgumentParser:
    from airbourne.services.registry import SERVICES

    names = ", ".join(SERVICES)
    parser = argparse.ArgumentParser(prog="airbourne", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_cmd = commands.add_parser(
        "serve",
        help="run services",
        description="Run services until Ctrl-C or SIGTERM, each on its own port.",
        epilog="Example: airbourne serve --services auth,flights --config config/production.toml",
    )
    serve_cmd.add_argument(
        "--services", default="all", metavar="LIST",
        help=f"'all' or a comma list of: {names} (default: all)",
    )
    serve_cmd.add_argument(
        "--workers", type=int, default=1, metavar="N",
        help="worker processes sharing the ports, to use N cores (default: 1)",
    )
    _config_argument(serve_cmd)

    users = commands.add_parser("users", help="manage users (operators)")
    user_commands = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    grant = user_commands.add_parser(
        "grant", help="give a user a role, e.g. `airbourne users grant ada@example.com ADMIN`"
    )
    grant.add_argument("email")
    grant.add_argument("role", help="ADMIN, AIRLINE_BUSINESS or CUSTOMER")
    _config_argument(grant)
    return parser


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE",
        help="TOML file overriding the embedded defaults (see config/production.example.toml)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = config_module.load(args.config)
        _setup_logging(config)
        if args.command == "serve":
            return _serve(config, args.services, args.workers)
        return _run(_grant(config, args.email, args.role))
    except (ConfigError, StartupError) as exc:
        print(f"airbourne: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def _serve(config: Config, selection: str, workers: int = 1) -> int:
    from airbourne.services.registry import SERVICES

    if not 1 <= workers <= 64:
        raise ConfigError(f"--workers must be between 1 and 64, got {workers}")
    if selection.strip() == "all":
        names = list(SERVICES)
    else:
        names = [name.strip() for name in selection.split(",") if name.strip()]
        unknown = [name for name in names if name not in SERVICES]
        if unknown or not names:
            raise ConfigError(
                f"unknown service {', '.join(unknown) or repr(selection)}; "
                f"choose from: all, {', '.join(SERVICES)}"
            )
    services = [SERVICES[name] for name in SERVICES if name in names]
    sockets = bind_all(config, [service.name for service in services])
    if workers == 1:
        return _run(serve(config, services, sockets, announce=_announce))
    _run(migrate(config, services))

    def work(index: int) -> int:
        announce = _announce if index == 0 else _silent
        return _run(serve(config, services, sockets, announce, background=index == 0))

    return run_workers(workers, work)


def _announce(line: str) -> None:
    print(line, flush=True)


def _silent(line: str) -> None:
    pass


async def _grant(config: Config, email: str, role: str) -> int:
    from airbourne import db
    from airbourne.services.auth import SERVICE, store

    database = await db.connect(config.services["auth"].database_url)
    try:
        await db.migrate(database, "auth", SERVICE.migrations)
        await store.grant_role(database, email.strip().lower(), role.strip().upper())
    except LookupError as exc:
        raise ConfigError(str(exc.args[0])) from None
    finally:
        await db.disconnect(database)
    print(f"{email} now has role {role.upper()}")
    return 0


def _run(main: Awaitable[int | None]) -> int:
    """Run `main` on uvloop when it is installed, else on asyncio's own loop."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main) or 0


def _setup_logging(config: Config) -> None:
    level = str(config["server"]["log_level"]).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"server.log_level must be debug, info, warning or error, got {level.lower()!r}")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    # aiormq logs an ERROR of its own for every failed connection attempt; the broker already
    # logs each attempt and its reason as a WARNING, so one line per attempt is enough.
    logging.getLogger("aiormq.connection").setLevel(logging.CRITICAL)


if __name__ == "__main__":
    sys.exit(main())
