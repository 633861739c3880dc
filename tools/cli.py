"""The ``nsm-forwarder`` console script: ``run``, ``demo`` and the operator client commands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from nsm_forwarder.tools.client import add_client_commands

EXIT_CONFIG = 2


def add_run_command(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="run the forwarder daemon",
        description="Run the forwarder. Settings come from the config file, then the "
        "environment (upstream NSM v0 names and NSM_FORWARDER_*), then these flags.",
    )
    run.add_argument("--config", help="config file (TOML); default /etc/nsm-forwarder/...")
    for flag, text, kind in RUN_FLAGS:
        run.add_argument(flag, help=text, type=kind, default=None)
    run.set_defaults(func=cmd_run)


#: The flags of ``run``: each sets the setting of its name (dashes for underscores).
RUN_FLAGS: list[tuple[str, str, Any]] = [
    ("--name", "forwarder name (FORWARDER_NAME)", str),
    ("--socket", "forwarder gRPC socket (FORWARDER_SOCKET)", str),
    ("--registrar-socket", "nsmd registrar socket (FORWARDER_REGISTRAR_SOCKET)", str),
    ("--src-ip", "node IP for remote mechanisms (NSM_FORWARDER_SRC_IP)", str),
    ("--driver", "data-plane driver", str),
    ("--workers", "worker processes running the driver", int),
    ("--state-dir", "state directory", str),
    ("--health-host", "address of the HTTP probes", str),
    ("--health-port", "port of the HTTP probes (0 = any free port)", int),
    ("--log-level", "DEBUG, INFO, WARNING or ERROR", str),
    ("--mtu", "MTU of local veth pairs", int),
    ("--vxlan-port", "UDP port of VXLAN tunnels", int),
    ("--wireguard-backend", "auto, kernel or userspace WireGuard", str),
    ("--vpp-api-socket", "driver vpp: VPP's API socket", str),
    ("--vpp-api-dir", "driver vpp: directory of VPP's .api.json files", str),
    ("--vpp-stats-socket", "driver vpp: VPP's stats socket", str),
    ("--vpp-uplink", "driver vpp: VPP interface VXLAN tunnels leave by", str),
    ("--vpp-connect-timeout", "driver vpp: how long to try VPP's socket (e.g. 10s)", str),
    ("--reregister-interval", "registration retry interval (e.g. 5s)", str),
    ("--operation-timeout", "data-plane operation timeout (e.g. 10s)", str),
    ("--max-restarts", "restart intensity limit (restarts per window)", int),
    ("--restart-window", "restart intensity window (e.g. 10s)", str),
    ("--faults", "fault plan for fault-injection tests (see docs/faults.md)", str),
]


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def cmd_run(args: argparse.Namespace) -> int:
    from nsm_forwarder.actors.supervisor import serve
    from nsm_forwarder.config.describe import as_log_dict
    from nsm_forwarder.config.errors import SettingsError
    from nsm_forwarder.config.loader import load_settings

    names = [flag[2:].replace("-", "_") for flag, _, _ in RUN_FLAGS]
    flags = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    try:
        settings = load_settings(flags, config_file=args.config)
    except SettingsError as exc:
        print(f"nsm-forwarder: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(settings.log_level)
    log = logging.getLogger("nsm_forwarder")
    if settings.insecure:
        from nsm_forwarder.actors.tls import INSECURE_WARNING

        log.warning(INSECURE_WARNING)
    log.info("config: %s", " ".join(f"{k}={v}" for k, v in as_log_dict(settings).items()))
    return asyncio.run(serve(settings))


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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_run_command(sub)
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
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
