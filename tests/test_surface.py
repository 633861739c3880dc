"""What request data can reach outside the process: no shell anywhere, and files opened only at
the places reviewed here (none takes a path from a request).

Read with ``ast`` from the installed code's source folders. A new ``open`` / ``os.open`` /
``subprocess`` call fails this test until it is added below, with the reason it is safe: that
is the review the issue asks for ("no path from a request is opened directly; no shell ever
sees request data"), kept from rotting.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("actors", "config", "drivers", "tools")

#: (module, call) -> how many such calls there are, and why each is safe
OPENS: dict[tuple[str, str], tuple[int, str]] = {
    ("drivers/linux/netns.py", "os.open"): (
        1,
        "namespace paths found by scanning /var/run/netns and /proc/<pid>/ns/net, checked to "
        "be nsfs with the inode asked for; never a path from a request",
    ),
    ("drivers/linux/node.py", "os.open"): (1, "/proc/thread-self/ns/net"),
    ("drivers/kernel/wireguard.py", "os.open"): (
        1,
        "the daemon's log under the forwarder's state dir; the name is derived from a hash",
    ),
    ("drivers/kernel/wireguard.py", "open"): (4, "/proc/<pid>/... of daemons, and their log"),
    ("actors/metrics.py", "open"): (1, "/proc/<worker pid>/stat"),
    ("actors/store.py", "open"): (2, "the state journal, read (fixed name in the state dir)"),
    ("actors/store.py", "os.open"): (
        5,
        "the state journal, its compacted copy, its lock file and its directory (fixed names "
        "in the state dir of the settings)",
    ),
    ("actors/svid.py", "open"): (1, "the operator's TLS files (settings)"),
    ("tools/client.py", "open"): (1, "the operator's request file (CLI argument)"),
    ("tools/client.py", "os.open"): (1, "os.devnull"),
    ("tools/cli.py", "os.open"): (1, "os.devnull"),
    ("tools/demo.py", "open"): (3, "the demo's own forwarder log"),
}

#: (module, call) -> count; argument lists only, never a shell
PROCESSES: dict[tuple[str, str], int] = {
    # python -m ...zygote (fixed argv); python -m ...worker when the zygote cannot fork it: the
    # worker's argv as WorkerProcess builds it, never a shell. The zygote's own children are
    # forks (os.fork) that run only a module of zygote.RUNNABLE (the worker). actors/workers.py
    # starts its workers through zygote.popen.
    ("actors/zygote.py", "subprocess.Popen"): 2,
    ("drivers/kernel/wireguard.py", "subprocess.run"): 1,  # wireguard-go <derived name>
    ("tools/demo.py", "subprocess.run"): 2,  # ip / ping argv of the demo's own namespaces
}

SHELLS = {"os.system", "os.popen", "os.execl", "os.execlp", "os.spawnl", "subprocess.getoutput"}


def _calls() -> Counter[tuple[str, str]]:
    found: Counter[tuple[str, str]] = Counter()
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(path.read_text(), rel)):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                if isinstance(func, ast.Name):
                    name = func.id
                elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                    name = f"{func.value.id}.{func.attr}"
                else:
                    continue
                for kw in node.keywords:
                    if kw.arg == "shell":
                        found[(rel, "shell=")] += 1
                found[(rel, name)] += 1
    return found


def test_files_are_opened_only_at_reviewed_places() -> None:
    calls = _calls()
    opened = {k: n for k, n in calls.items() if k[1] in ("open", "os.open", "io.open")}
    assert opened == {k: n for k, (n, _) in OPENS.items()}


def test_no_shell_and_only_reviewed_processes() -> None:
    calls = _calls()
    assert not [k for k in calls if k[1] in SHELLS or k[1] == "shell="]
    started = {k: n for k, n in calls.items() if k[1].startswith("subprocess.")}
    started = {k: n for k, n in started.items() if k[1] not in ("subprocess.TimeoutExpired",)}
    assert started == PROCESSES
