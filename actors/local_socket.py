"""The forwarder's unix socket, made mode 0660 (with a chosen group) before anyone can reach it.

``add_unix_port(server, path, credentials, group)``: gRPC binds the socket in a fresh directory
of mode 0700 beside ``path`` (only this user can connect there), the socket gets its group and
mode 0660, and only then is it renamed to ``path`` (atomic, same directory's file system). There
is no moment at which the socket is reachable with wider permissions, and the process umask is
never changed (other threads create files meanwhile).
``resolve_group(group)``: a group name or number to a gid ("" = this process's group).
"""

from __future__ import annotations

import grp
import os
import shutil
import tempfile

import grpc
import grpc.aio

SOCKET_MODE = 0o660


class SocketError(Exception):
    """The socket cannot be created as asked; the message says why."""


def resolve_group(group: str) -> int:
    """The gid of ``group`` (a name or a number); -1 (keep the process's group) for ""."""
    if not group:
        return -1
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise SocketError(f"NSM_FORWARDER_SOCKET_GROUP: no group named {group!r}") from None


def add_unix_port(
    server: grpc.aio.Server,
    path: str,
    credentials: grpc.ServerCredentials | None,
    group: str = "",
) -> None:
    """Bind ``server`` to the unix socket ``path`` (absolute; its directory exists, nothing is
    at ``path``), mode 0660 and group ``group``, with ``credentials`` (None = plaintext)."""
    gid = resolve_group(group)
    private = tempfile.mkdtemp(prefix=".nsm-forwarder-", dir=os.path.dirname(path))
    staged = os.path.join(private, "s")
    try:
        address = "unix://" + staged
        try:
            if credentials is None:
                server.add_insecure_port(address)
            else:
                server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise SocketError(f"cannot listen on unix://{path}: {exc}") from None
        try:
            os.chown(staged, -1, gid)
            os.chmod(staged, SOCKET_MODE)
            os.rename(staged, path)
        except OSError as exc:
            raise SocketError(f"cannot set up the socket {path}: {exc.strerror}") from None
    finally:
        shutil.rmtree(private, ignore_errors=True)
