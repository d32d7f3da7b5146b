"""vpnbot: the composition root and command line.

    vpnbot run [--config PATH]          run the service until SIGTERM/SIGINT; without a
                                        config file: the sandbox (local peers)
    vpnbot run --fresh                  the sandbox, its state removed first
    vpnbot migrate [--config PATH]      apply pending database migrations
    vpnbot check-config [PATH]          validate a config file and exit
    vpnbot plugins [--config PATH]      list loaded plugins and what they provide
    vpnbot status [--url URL]           show a running instance's actors
    vpnbot updates [--replay ID|all]    list the Telegram updates the bot gave up on, or
                                        process them again

Exit codes: 0 clean stop, 69 instance unreachable (status), 70 unexpected error,
71 a listening port cannot be bound (the message names it and its setting), 75 temporary
(a failure budget escalated, the database is unreachable: systemd restarts the service),
78 the configuration or the database schema needs an operator.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime.app import StartupError
    from runtime.app._early import EarlyStart
    from runtime.config import Settings

from runtime.app.exit_codes import EX_CONFIG, EX_OK, EX_OSERR, EX_SOFTWARE, EX_UNAVAILABLE

# Each command imports what it uses when it runs: `vpnbot --help`, `status` or `check-config`
# never pay for the bot (aiogram), and only `run` pays for the HTTP server.


def _config_path(given: str | None, environ: Mapping[str, str]) -> Path | None:
    value = given or environ.get("VPNBOT_CONFIG")
    return Path(value) if value else None


def _load(path: Path | None, environ: Mapping[str, str]) -> Settings | None:
    from runtime.config import ConfigError, load_settings

    try:
        return load_settings(path, environ=environ)
    except ConfigError as exc:
        print(exc.format(), file=sys.stderr)
        return None


def _setup_logging(settings: Settings) -> None:
    from runtime.logs import configure_logging

    configure_logging(
        fmt=settings.service.log_format,
        level=settings.service.log_level,
        secrets=settings.secret_values(),
        stream=sys.stdout,
    )


def cmd_run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from runtime.app._early import EarlyStart, Terminated
    from runtime.app._settle import one_malloc_arena, pause_collector
    from runtime.app._without_http2 import import_httpx_without_http2

    one_malloc_arena()
    pause_collector()
    import_httpx_without_http2()

    early = EarlyStart()
    early.watch_signals()
    try:
        return _run(args, environ, early)
    except Terminated as stop:
        from runtime.logs import get_logger

        get_logger("supervisor").info("stopped during the start", signal=str(stop), exit_code=0)
        return EX_OK
    finally:
        early.close()
        early.restore_signals()


def _run(args: argparse.Namespace, environ: Mapping[str, str], early: EarlyStart) -> int:
    """Start what needs no runtime (the embedded server, the bot's import) in threads, then
    import and assemble the runtime and serve it."""
    path = _config_path(args.config, environ)
    settings = _load(path, environ)
    if settings is None:
        return EX_CONFIG
    early.stop_if_requested()
    sandbox = args.sandbox or path is None
    if args.fresh and not _start_afresh(path, settings):
        return EX_CONFIG
    if sandbox:
        early.progress = _say
    if not _bind_ports(settings, args.telegram_port if sandbox else None, early):
        return EX_OSERR
    if settings.database.dsn is None:
        early.start_server(Path(settings.database.data_dir))
    if sandbox or settings.telegram.token is not None:
        from runtime.bot import BOT_LIBRARIES

        early.import_in_background(BOT_LIBRARIES)
    _setup_logging(settings)
    if sandbox:
        return _run_sandbox(settings, environ, args.telegram_port, early)
    import trio

    from runtime.app import build_runtime, serve
    from runtime.config import ConfigError
    from runtime.logs import get_logger, log_failure

    early.stop_if_requested()
    try:
        runtime = build_runtime(settings, environ=environ)
    except ConfigError as exc:
        print(exc.format(), file=sys.stderr)
        return EX_CONFIG
    early.stop_if_requested()
    try:
        return trio.run(lambda: serve(runtime, early=early, config=path))
    except Exception as exc:
        log_failure(get_logger("supervisor"), exc, operation="run")
        return EX_SOFTWARE


def _start_afresh(path: Path | None, settings: Settings) -> bool:
    """``run --fresh``: remove the sandbox's state (its embedded database and its chats).
    Refused with a config file or a configured database: only the sandbox's own state goes."""
    from runtime.sandbox import StateInUse, remove_state

    if path is not None:
        print(
            f"vpnbot run --fresh: refused: a config file is in use ({path}). --fresh removes"
            " the sandbox's state and runs only without a config file",
            file=sys.stderr,
        )
        return False
    if settings.database.dsn is not None:
        print(
            "vpnbot run --fresh: refused: database.dsn is set; --fresh removes only the"
            " sandbox's embedded database",
            file=sys.stderr,
        )
        return False
    try:
        removed = remove_state(settings)
    except StateInUse as exc:
        print(f"vpnbot run --fresh: refused: {exc}", file=sys.stderr)
        return False
    except OSError as exc:
        print(f"vpnbot run --fresh: cannot remove the sandbox's state: {exc}", file=sys.stderr)
        return False
    print(
        "vpnbot run --fresh: removed "
        + (", ".join(str(p) for p in removed) if removed else "nothing (no state yet)"),
        file=sys.stderr,
    )
    return True


def _say(text: str) -> None:
    print(f"vpnbot: {text}", flush=True)


def _bind_ports(settings: Settings, telegram_port: int | None, early: EarlyStart) -> bool:
    """Bind every listening port before anything slow starts; False (said on stderr) when
    one cannot be bound. ``telegram_port``: the sandbox's emulator."""
    from runtime.app._ports import PortUnavailable, PortUse, http_ports

    uses = http_ports(settings)
    if telegram_port is not None:
        uses.append(
            PortUse(
                "telegram",
                "the sandbox's Telegram emulator",
                "127.0.0.1",
                telegram_port,
                "vpnbot run --telegram-port",
            )
        )
    try:
        early.ports.bind(uses)
    except PortUnavailable as exc:
        print(f"vpnbot run: {exc}", file=sys.stderr)
        return False
    return True


def _run_sandbox(
    settings: Settings, environ: Mapping[str, str], telegram_port: int, early: EarlyStart
) -> int:
    import trio

    from runtime.config import ConfigError
    from runtime.logs import get_logger, log_failure
    from runtime.sandbox import SandboxPorts, run_sandbox

    ports = SandboxPorts(telegram=telegram_port)
    early.stop_if_requested()
    try:
        return trio.run(lambda: run_sandbox(settings, environ=environ, ports=ports, early=early))
    except ConfigError as exc:
        print(exc.format(), file=sys.stderr)
        return EX_CONFIG
    except Exception as exc:
        log_failure(get_logger("sandbox"), exc, operation="run")
        return EX_SOFTWARE


def _startup_error(exc: Exception, kind: type[StartupError]) -> StartupError:
    """The ``StartupError`` behind ``exc``, which the asyncio loop's nursery wraps in an
    exception group; anything else is raised again."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
        inner = exc.exceptions[0]
        if isinstance(inner, Exception):
            return _startup_error(inner, kind)
    raise exc


def cmd_migrate(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = _load(_config_path(args.config, environ), environ)
    if settings is None:
        return EX_CONFIG
    _setup_logging(settings)
    import trio

    from runtime.app import StartupError, migrate

    try:
        applied = trio.run(migrate, settings)
    except Exception as exc:
        refused = _startup_error(exc, StartupError)
        print(f"vpnbot migrate: {refused}", file=sys.stderr)
        return refused.exit_code
    print(f"applied: {', '.join(applied)}" if applied else "the database is up to date")
    return EX_OK


def cmd_check_config(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    path = _config_path(args.path, environ)
    settings = _load(path, environ)
    if settings is None:
        return EX_CONFIG
    from runtime.app import check_configuration
    from runtime.config import ConfigError
    from runtime.logs import configure_logging

    configure_logging(fmt="console", level="critical")
    try:
        # Without a file, `vpnbot run` is the sandbox, which brings its own Telegram.
        report = check_configuration(settings, environ=environ, production=path is not None)
    except ConfigError as exc:
        print(exc.format(), file=sys.stderr)
        return EX_CONFIG
    for problem in report.plugins.problems:
        print(f"plugin left out: {problem.name}: {problem.error}", file=sys.stderr)
    for warning in report.warnings:
        print(f"config warning: {warning}", file=sys.stderr)
    print(f"config ok: {path if path else 'embedded defaults'}")
    return EX_OK


def cmd_plugins(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = _load(_config_path(args.config, environ), environ)
    if settings is None:
        return EX_CONFIG
    from runtime.app import plugin_services
    from runtime.app.tables import render_plugins
    from runtime.config import ConfigError
    from runtime.logs import configure_logging
    from runtime.plugin_api import load_plugins

    configure_logging(fmt="console", level="critical")
    try:
        plugins = load_plugins(settings, plugin_services(settings), environ=environ)
    except ConfigError as exc:
        print(exc.format(), file=sys.stderr)
        return EX_CONFIG
    print(render_plugins(plugins))
    return EX_OK if not plugins.problems else EX_SOFTWARE


def cmd_status(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    import httpx

    from runtime.app.tables import render_status

    url = args.url
    if url is None:
        settings = _load(_config_path(args.config, environ), environ)
        if settings is None:
            return EX_CONFIG
        if not settings.http.enabled:
            print("vpnbot status: the operator listener is off (http.enabled)", file=sys.stderr)
            return EX_CONFIG
        from runtime.app import operator_url

        url = operator_url(settings.http)
    try:
        response = httpx.get(f"{url.rstrip('/')}/status", timeout=args.timeout)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        print(f"vpnbot is not answering at {url}: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    print(render_status(response.json()))
    return EX_OK


def cmd_updates(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = _load(_config_path(args.config, environ), environ)
    if settings is None:
        return EX_CONFIG
    _setup_logging(settings)
    import trio

    from runtime.app import StartupError, given_up_updates, render_given_up, replay_updates

    try:
        if args.replay is None:
            print(render_given_up(trio.run(lambda: given_up_updates(settings, limit=args.limit))))
            return EX_OK
        wanted = None if args.replay == "all" else [args.replay]
        replayed = trio.run(replay_updates, settings, wanted)
    except Exception as exc:
        refused = _startup_error(exc, StartupError)
        print(f"vpnbot updates: {refused}", file=sys.stderr)
        return refused.exit_code
    if replayed:
        print(f"processing again: {', '.join(str(i) for i in replayed)}")
    else:
        print(f"no given-up update matches {args.replay}")
    return EX_OK


def _update_to_replay(value: str) -> int | str:
    if value == "all":
        return value
    if value.isdigit() and int(value) < 2**63:
        return int(value)
    raise argparse.ArgumentTypeError("an update id or 'all'")


def cmd_config_reference(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from runtime.config import reference_markdown
    from runtime.logs import configure_logging

    # errors on stderr: the plugin loader's lines must not land in the reference on stdout
    configure_logging(fmt="console", level="error")
    print(reference_markdown(), end="")
    return EX_OK


def parser() -> argparse.ArgumentParser:
    main_parser = argparse.ArgumentParser(prog="vpnbot", description=__doc__.splitlines()[0])
    commands = main_parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="run the service")
    run.add_argument("--config", help="TOML config file (default: $VPNBOT_CONFIG)")
    run.add_argument(
        "--sandbox",
        action="store_true",
        help="run against local stand-ins for Telegram, the VPN panel and CryptoBot"
        " (the default without a config file)",
    )
    run.add_argument(
        "--telegram-port", type=int, default=8081, help="the sandbox's Telegram emulator port"
    )
    run.add_argument(
        "--fresh",
        action="store_true",
        help="sandbox only: remove its state (embedded database, chats) and start afresh",
    )
    run.set_defaults(handler=cmd_run)
    migrate_parser = commands.add_parser("migrate", help="apply pending database migrations")
    migrate_parser.add_argument("--config")
    migrate_parser.set_defaults(handler=cmd_migrate)
    check = commands.add_parser("check-config", help="validate the configuration and exit")
    check.add_argument("path", nargs="?", help="TOML config file (default: $VPNBOT_CONFIG)")
    check.set_defaults(handler=cmd_check_config)
    reference = commands.add_parser("config-reference", help="print every config key")
    reference.set_defaults(handler=cmd_config_reference)
    plugins = commands.add_parser("plugins", help="list plugins and what they provide")
    plugins.add_argument("--config")
    plugins.set_defaults(handler=cmd_plugins)
    status = commands.add_parser("status", help="show the actors of a running instance")
    status.add_argument(
        "--url", help="base URL of the operator listener (default: [http] of the config)"
    )
    status.add_argument("--config")
    status.add_argument("--timeout", type=float, default=5.0)
    status.set_defaults(handler=cmd_status)
    updates = commands.add_parser(
        "updates", help="list the Telegram updates given up, or process them again"
    )
    updates.add_argument("--config")
    updates.add_argument("--limit", type=int, default=50, help="list at most this many")
    updates.add_argument(
        "--replay",
        metavar="ID|all",
        type=_update_to_replay,
        help="process this given-up update again, or all of them",
    )
    updates.set_defaults(handler=cmd_updates)
    return main_parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = parser().parse_args(argv)
    env = os.environ if environ is None else environ
    if args.command is None:
        args = parser().parse_args(["run", *(argv or [])])
    if args.command != "status":
        from runtime.logs import hold_warnings

        # Before the libraries are imported: the warnings they raise on import reach the
        # log too.
        hold_warnings()
    handler = args.handler
    return int(handler(args, env))


if __name__ == "__main__":
    sys.exit(main())
