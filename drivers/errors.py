"""Errors shared by drivers, workers and actors.

Every error carries a gRPC status name (``code``) so the front end can answer with a fixed status,
and ``retriable`` tells a caller whether trying again may help. Errors cross the worker-process
boundary as ``{"code", "message", "retriable"}`` (see :meth:`ForwarderError.to_wire`).
"""

from __future__ import annotations

from typing import Any


class ForwarderError(Exception):
    """Base of every error the forwarder reports; ``code`` is a grpc.StatusCode name."""

    code = "INTERNAL"
    retriable = False

    def __init__(self, message: str, *, code: str | None = None, retriable: bool | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retriable is not None:
            self.retriable = retriable

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "retriable": self.retriable}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ForwarderError:
        kind = _BY_CODE.get(data.get("code", ""), DriverError)
        err = kind(str(data.get("message", "")))
        err.code = str(data.get("code", err.code))
        err.retriable = bool(data.get("retriable", err.retriable))
        return err


class InvalidRequest(ForwarderError):
    """The request is malformed or asks for something unsupported; retrying will not help."""

    code = "INVALID_ARGUMENT"


class NotFound(ForwarderError):
    """Something the request names (a pod network namespace) does not exist."""

    code = "NOT_FOUND"


class AlreadyExists(ForwarderError):
    """An object the request would create already exists and is not ours to replace."""

    code = "ALREADY_EXISTS"


class DriverError(ForwarderError):
    """The data plane refused or failed an operation."""

    code = "INTERNAL"


class WorkerLost(ForwarderError):
    """The worker process running the call died or was killed; the call may be retried."""

    code = "UNAVAILABLE"
    retriable = True


class OperationTimeout(ForwarderError):
    """A worker did not answer within the operation timeout (it is killed and replaced)."""

    code = "DEADLINE_EXCEEDED"
    retriable = True


_BY_CODE: dict[str, type[ForwarderError]] = {
    "INVALID_ARGUMENT": InvalidRequest,
    "NOT_FOUND": NotFound,
    "ALREADY_EXISTS": AlreadyExists,
    "UNAVAILABLE": WorkerLost,
    "DEADLINE_EXCEEDED": OperationTimeout,
}
