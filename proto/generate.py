"""Regenerate the Python stubs beside the .proto files.

Usage (from anywhere): ``python -m nsm_forwarder.proto.generate`` writes the stubs into this
folder; ``--check`` only compares and exits 1 when a committed stub is stale.

The .proto files import each other as ``nsm_forwarder/proto/<file>.proto``, so protoc is given a
virtual include root and the generated modules import ``nsm_forwarder.proto.<x>_pb2``. Package
names, message names and field numbers (everything on the wire) are those of NSM v0.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTOS = sorted(p.name for p in HERE.glob("*.proto"))
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generated_names() -> list[str]:
    """Every stub file name that generation produces, sorted."""
    return sorted(p.removesuffix(".proto") + s for p in PROTOS for s in SUFFIXES)


def generate(out_dir: Path) -> dict[str, bytes]:
    """Run protoc on every .proto here; return {file name: content} of the stubs."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-Insm_forwarder/proto={HERE}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(f"{HERE}/{p}" for p in PROTOS),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed")
    produced = out_dir / "nsm_forwarder" / "proto"
    return {name: (produced / name).read_bytes() for name in generated_names()}


def stale_files() -> list[str]:
    """Names of committed stubs that differ from a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
    stale = []
    for name, content in fresh.items():
        path = HERE / name
        if not path.exists() or path.read_bytes() != content:
            stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a stub is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for name in stale:
            print(f"stale: proto/{name}", file=sys.stderr)
        return 1 if stale else 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in generate(Path(tmp)).items():
            (HERE / name).write_bytes(content)
    shutil.rmtree(HERE / "__pycache__", ignore_errors=True)
    print(f"regenerated {len(generated_names())} files in {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
