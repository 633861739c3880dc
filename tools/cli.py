"""The ``nsm-forwarder`` console script: ``run``, ``config show``, ``demo``, the operator client
commands and ``--version``."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import logging
import os
import sys
from typing import Any

from nsm_forwarder.actors.logs import setup_logging
from nsm_forwarder.tools.client import add_client_commands
from nsm_forwarder.tools.settings_flags import add_setting_flags, setting_flags

EXIT_CONFIG = 2


def add_run_command(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="run the forwarder daemon",
        description="Run the forwarder. Settings come from the shipped defaults, the config file, "
        "then the environment (upstream NSM v0 names and NSM_FORWARDER_*), then these flags.",
    )
    run.add_argument("--config", help=CONFIG_HELP)
    add_setting_flags(run)
    run.set_defaults(func=cmd_run)


CONFIG_HELP = (
    "config file (TOML; keys are setting names) [env NSM_FORWARDER_CONFIG; default "
    "/etc/nsm-forwarder/forwarder.toml if it exists]"
)


def version() -> str:
    """The installed package's version (the source tree's when not installed)."""
    try:
        return importlib.metadata.version("nsm-forwarder")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def cmd_run(args: argparse.Namespace) -> int:
    from nsm_forwarder.actors.malloc import limit_arenas
    from nsm_forwarder.actors.supervisor import serve
    from nsm_forwarder.config.describe import as_log_dict
    from nsm_forwarder.config.errors import SettingsError
    from nsm_forwarder.config.loader import load_settings

    try:
        settings = load_settings(setting_flags(args), config_file=args.config)
    except SettingsError as exc:
        print(f"nsm-forwarder: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(settings.log_level, settings.log_format)
    log = logging.getLogger("nsm_forwarder")
    log.info("nsm-forwarder %s", version())
    if settings.insecure:
        from nsm_forwarder.actors.tls import INSECURE_WARNING

        log.warning(INSECURE_WARNING)
    log.info("config: %s", " ".join(f"{k}={v}" for k, v in as_log_dict(settings).items()))
    limit_arenas()
    return asyncio.run(serve(settings))


def add_config_command(sub: Any) -> None:
    config = sub.add_parser("config", help="show the effective configuration")
    actions = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser(
        "show",
        help="print every setting's effective value and where it came from",
        description="Print every setting as `run` would use it, with its source: default, "
        "shipped file, file <path>, env <VAR> or flag --<name>; secrets are masked. Takes the "
        "same --config and setting flags as `run`. Exit code 2 when the settings are invalid "
        "(the error is printed after the table).",
    )
    show.add_argument("--config", help=CONFIG_HELP)
    show.add_argument(
        "--json", action="store_true", help="one JSON object: setting -> value, source"
    )
    add_setting_flags(show)
    show.set_defaults(func=cmd_config_show)


def cmd_config_show(args: argparse.Namespace) -> int:
    from nsm_forwarder.config.errors import SettingsError
    from nsm_forwarder.config.loader import explain_settings

    try:
        rows, failure = explain_settings(setting_flags(args), config_file=args.config)
    except SettingsError as exc:
        print(f"nsm-forwarder: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.json:
        table = {r.name: {"value": r.value, "source": r.source} for r in rows}
        print(json.dumps(table, indent=2))
    else:
        width = max(len(r.name) for r in rows)
        value_width = min(60, max(len(r.value) for r in rows))
        print(f"{'setting':<{width}}  {'value':<{value_width}}  source")
        for r in rows:
            value = r.value or '""'
            print(f"{r.name:<{width}}  {value:<{value_width}}  {r.source}")
    if failure is not None:
        print(f"nsm-forwarder: {failure}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from nsm_forwarder.tools.demo import run_demo

    vpp = {
        "NSM_FORWARDER_VPP_API_SOCKET": args.vpp_api_socket,
        "NSM_FORWARDER_VPP_API_DIR": args.vpp_api_dir,
        "NSM_FORWARDER_VPP_STATS_SOCKET": args.vpp_stats_socket,
    }
    settings = {k: v for k, v in vpp.items() if v}
    return run_demo(keep_logs=args.verbose, driver=args.driver, settings=settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nsm-forwarder",
        description="Network Service Mesh v0 forwarder (kernel or VPP data plane).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_run_command(sub)
    add_config_command(sub)
    demo = sub.add_parser(
        "demo", help="connect two pod namespaces through a forwarder and ping (needs root)"
    )
    demo.add_argument("-v", "--verbose", action="store_true", help="show the forwarder's log")
    demo.add_argument(
        "--driver",
        choices=("kernel", "vpp"),
        default="kernel",
        help="data plane (vpp: through a VPP already running in this network namespace)",
    )
    demo.add_argument("--vpp-api-socket", help="driver vpp: VPP's API socket")
    demo.add_argument("--vpp-api-dir", help="driver vpp: directory of VPP's .api.json files")
    demo.add_argument("--vpp-stats-socket", help="driver vpp: VPP's stats socket")
    demo.set_defaults(func=cmd_demo)
    add_client_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except BrokenPipeError:
        # the reader went away (`nsm-forwarder config show | head`): not an error of ours;
        # stdout is pointed at /dev/null so that the interpreter's final flush stays quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
