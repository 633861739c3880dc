"""A throwaway VM whose kernel has what this machine's kernel lacks (WireGuard), for tests.

``qemu-system-x86_64`` boots Debian's stock kernel (package ``linux-image-<version>-amd64``, which
has the ``wireguard`` module) under software emulation - this machine's ``/dev/kvm`` does not run
guests - with a tiny initramfs of our own and no disk image:

1. busybox (``busybox-static``) loads the virtio, 9p and overlay modules and mounts the *host's*
   root file system read-only over virtio-9p, under an overlay whose upper layer is guest RAM:
   the guest runs this very checkout, venv and tools (iproute2, ping, wireguard-go, wg), may
   write anywhere, and none of it reaches the host;
2. it mounts fresh proc, sys, dev, ``/run`` and ``/dev/shm`` over that, and a second, writable
   9p share (a directory of the caller's) at ``/run/out``;
3. it runs ``/run/out/run.sh`` in a chroot of that root, writes its exit code to
   ``/run/out/rc`` and powers the VM off.

The guest has no network device: whatever the command does with networks stays inside the
guest's own namespaces. Nothing is written to the host but the out directory.

The kernel and initramfs are built once into :data:`CACHE_DIR` by ``python -m tests.vm.machine``
(``bash .ci/dev test`` does it): the kernel package is downloaded with ``apt-get download`` and
unpacked (never installed), its modules indexed with ``depmod``; the initramfs is written here
(newc cpio, gzip). It needs ``qemu-system-x86``, ``busybox-static`` and ``kmod`` from Debian.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

CACHE_DIR = Path(os.environ.get("NSM_TEST_VM_CACHE", "/var/cache/nsm-forwarder-test-vm"))
QEMU = "qemu-system-x86_64"
BUSYBOX = "/bin/busybox"
META_PACKAGE = "linux-image-amd64"
#: modules the initramfs loads, in dependency order, to mount the host over virtio-9p
BOOT_MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "9pnet",
    "9pnet_virtio",
    "netfs",
    "fscache",
    "9p",
    "overlay",
)
#: modules the guest loads before running the command (the host's modprobe, our module tree)
GUEST_MODULES = ("wireguard", "veth", "vxlan", "tun")

INIT = r"""#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
for m in {modules}; do $B insmod /modules/$m.ko || echo "nsm-vm: insmod $m failed"; done
O="-o trans=virtio,version=9p2000.L,msize=512000"
$B mount -t 9p $O,ro,cache=loose host /host || echo "nsm-vm: cannot mount the host root"
$B mount -t tmpfs tmpfs /rw
$B mkdir -p /rw/upper /rw/work
R=/newroot
$B mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work $R \
  || echo "nsm-vm: cannot mount the overlay"
$B mount -t proc proc $R/proc
$B mount -t sysfs sys $R/sys
$B mount -t devtmpfs dev $R/dev
$B mount -t tmpfs -o mode=755 tmpfs $R/run
$B mkdir -p $R/dev/shm $R/run/out
$B mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
$B mount -t 9p $O out $R/run/out || echo "nsm-vm: cannot mount the out share"
echo "nsm-vm: booted in $($B cut -d' ' -f1 /proc/uptime) s"
$B chroot $R /bin/sh /run/out/run.sh
echo $? > $R/run/out/rc
$B sync
$B poweroff -f
"""


@dataclass(frozen=True)
class Assets:
    """What one boot needs: the kernel image, the initramfs and the unpacked module tree."""

    version: str
    root: Path  # the unpacked package: <root>/boot/vmlinuz-<version>, <root>/lib/modules/...

    @property
    def kernel(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.version}"

    @property
    def initrd(self) -> Path:
        """Named after what goes into it, so a changed init script or module list makes a new
        one (see :func:`build`) and a stale one is never booted."""
        digest = hashlib.sha256(f"{INIT}{BOOT_MODULES}".encode()).hexdigest()[:12]
        return self.root.parent / f"initrd-{digest}.img"

    @property
    def ready_marker(self) -> Path:
        return self.root.parent / "ready"


def find_assets() -> Assets | None:
    """The assets built earlier (the newest kernel version cached), or None."""
    if not CACHE_DIR.is_dir():
        return None
    for version_dir in sorted(CACHE_DIR.iterdir(), reverse=True):
        assets = Assets(version_dir.name, version_dir / "root")
        if assets.ready_marker.exists() and assets.kernel.exists() and assets.initrd.exists():
            return assets
    return None


def missing_tools() -> list[str]:
    return [t for t in (QEMU, BUSYBOX, "depmod", "modprobe") if shutil.which(t) is None]


# --- building ---------------------------------------------------------------------------------


def _run(*cmd: str, cwd: Path | None = None) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()[-800:]}")
    return done.stdout


def _kernel_package() -> str:
    """The versioned package ``linux-image-amd64`` depends on (e.g. linux-image-6.1.0-56-amd64)."""
    for attempt in (1, 2):
        try:
            out = _run("apt-cache", "depends", META_PACKAGE)
        except RuntimeError:
            out = ""
        for line in out.splitlines():
            kind, _, name = line.strip().partition(": ")
            if kind == "Depends" and name.startswith("linux-image-"):
                return name
        if attempt == 1:
            _run("apt-get", "update", "-qq")
    raise RuntimeError(f"apt knows no {META_PACKAGE}: cannot find a kernel package to download")


def _cpio_newc(files: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (path, mode, data) entries (directories have empty data)."""
    out = bytearray()

    def entry(name: str, mode: int, data: bytes, ino: int) -> None:
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data) in enumerate(files, 1):
        entry(name, mode, data, ino)
    entry("TRAILER!!!", 0, b"", 0)
    return bytes(out)


def _initramfs(assets: Assets) -> bytes:
    modules_dir = assets.root / "lib" / "modules" / assets.version
    by_name = {p.name.removesuffix(".ko"): p for p in modules_dir.rglob("*.ko")}
    missing = [m for m in BOOT_MODULES if m not in by_name]
    if missing:
        raise RuntimeError(f"kernel {assets.version} lacks modules {', '.join(missing)}")
    directory, executable, plain = 0o040755, 0o100755, 0o100644
    init = INIT.replace("{modules}", " ".join(BOOT_MODULES)).encode()
    files: list[tuple[str, int, bytes]] = [
        (d, directory, b"")
        for d in ("bin", "dev", "proc", "sys", "host", "rw", "newroot", "modules")
    ]
    files.append(("bin/busybox", executable, Path(BUSYBOX).read_bytes()))
    files.append(("init", executable, init))
    files += [(f"modules/{m}.ko", plain, by_name[m].read_bytes()) for m in BOOT_MODULES]
    return gzip.compress(_cpio_newc(files), compresslevel=1)


def build(log: bool = True) -> Assets:
    """Download and unpack the kernel, index its modules, write the initramfs (cached)."""
    missing = missing_tools()
    if missing:
        raise RuntimeError(
            f"missing {', '.join(missing)} (apt: qemu-system-x86 busybox-static kmod)"
        )
    package = _kernel_package()
    version = package.removeprefix("linux-image-")
    assets = Assets(version, CACHE_DIR / version / "root")
    if assets.ready_marker.exists():
        if not assets.initrd.exists():
            for old in assets.root.parent.glob("initrd-*.img"):
                old.unlink()
            assets.initrd.write_bytes(_initramfs(assets))
        return assets
    started = time.monotonic()
    work = assets.root.parent
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        _run("apt-get", "download", "-q", package, cwd=work)
    except RuntimeError:  # stale package lists: the version they name is gone from the mirror
        _run("apt-get", "update", "-qq")
        _run("apt-get", "download", "-q", package, cwd=work)
    (deb,) = work.glob("*.deb")
    _run("dpkg-deb", "-x", str(deb), str(assets.root))
    deb.unlink()
    _run("depmod", "-b", str(assets.root), version)
    assets.initrd.write_bytes(_initramfs(assets))
    assets.ready_marker.write_text(f"{package}\n")
    if log:
        print(f"test VM: kernel {version} ready in {work} ({time.monotonic() - started:.0f} s)")
    return assets


# --- running ----------------------------------------------------------------------------------


@dataclass
class Run:
    """The outcome of one boot: the command's exit code (None: it never finished), what the
    console showed, and how long the boot and the whole run took."""

    rc: int | None
    console: str
    seconds: float


def run(
    assets: Assets,
    command: str,
    out_dir: Path,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 900,
    memory_mb: int = 1536,
    cpus: int = 2,
) -> Run:
    """Boot, run ``command`` (a shell command line) as root in the guest's chroot of the host's
    file system, and power off. ``out_dir`` is writable from the guest as ``/run/out``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("rc", "console.log"):
        (out_dir / stale).unlink(missing_ok=True)
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in (env or {}).items())
    modules = " ".join(GUEST_MODULES)
    (out_dir / "run.sh").write_text(
        "set -u\n"
        f"modprobe -d {shlex.quote(str(assets.root))} -a {modules} || exit 97\n"
        "ip link set lo up\n"
        "export HOME=/tmp PYTHONDONTWRITEBYTECODE=1\n"
        f"{exports}"
        f"{command}\n"
    )
    console = out_dir / "console.log"
    cmd = [
        QEMU,
        *("-accel", "tcg,thread=multi", "-cpu", "max", "-smp", str(cpus), "-m", str(memory_mb)),
        *("-nodefaults", "-no-reboot", "-display", "none", "-serial", f"file:{console}"),
        *("-kernel", str(assets.kernel), "-initrd", str(assets.initrd)),
        *("-append", "console=ttyS0 quiet panic=-1"),
        "-virtfs",
        "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
        "-virtfs",
        f"local,path={out_dir},mount_tag=out,security_model=none",
    ]
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        qemu_out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        qemu_out, _ = proc.communicate()
    seconds = time.monotonic() - started
    text = console.read_text(errors="replace") if console.exists() else ""
    text += qemu_out.decode(errors="replace")
    rc_file = out_dir / "rc"
    rc = int(rc_file.read_text().strip()) if rc_file.exists() else None
    return Run(rc, text, seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print the cached kernel version")
    args = parser.parse_args()
    if args.print:
        found = find_assets()
        print(found.version if found else "none")
        return 0 if found else 1
    try:
        build()
    except RuntimeError as exc:
        print(f"test VM: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
