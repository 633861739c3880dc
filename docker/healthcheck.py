#!/usr/bin/env python3
"""nsm-forwarder-healthcheck - exit 0 when the forwarder's /liveness answers 200, else 1.

The image's Docker HEALTHCHECK (Kubernetes ignores it and uses the DaemonSet's probes). Only the
standard library, so it starts fast and works whatever state the forwarder's config is in. The
address comes from the environment the forwarder itself reads: NSM_FORWARDER_HEALTH_PORT
(default 5555) and NSM_FORWARDER_HEALTH_HOST (a wildcard address or none means loopback).
"""

from __future__ import annotations

import os
import sys
import urllib.request
from collections.abc import Mapping

#: wildcard listen addresses, and the address that reaches them from inside the container
LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def url(environ: Mapping[str, str] = os.environ) -> str:
    """The /liveness URL of the forwarder configured by ``environ``."""
    host = environ.get("NSM_FORWARDER_HEALTH_HOST", "")
    host = LOOPBACK.get(host, host)
    port = environ.get("NSM_FORWARDER_HEALTH_PORT", "5555")
    return f"http://[{host}]:{port}/liveness" if ":" in host else f"http://{host}:{port}/liveness"


def main() -> int:
    try:
        with urllib.request.urlopen(url(), timeout=2) as answer:
            return 0 if answer.status == 200 else 1
    except OSError as exc:
        print(f"nsm-forwarder-healthcheck: {url()}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
