"""UndoStack: the undo of every step done so far, run in reverse when a later step fails."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from nsm_forwarder.drivers.linux.links import to_forwarder_error

log = logging.getLogger(__name__)


class UndoStack:
    """Undo actions pushed as steps succeed; :meth:`unwind` runs them last-in first-out.

    Unwinding is best effort: an undo that raises is logged at WARNING and the rest still run.
    """

    def __init__(self) -> None:
        self._items: list[tuple[str, Callable[[], object]]] = []

    def push(self, what: str, undo: Callable[[], object]) -> None:
        """Record ``undo`` (described by ``what``) for a step that just succeeded."""
        self._items.append((what, undo))

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        """Forget every undo (the whole operation succeeded)."""
        self._items.clear()

    def unwind(self) -> list[tuple[str, BaseException]]:
        """Run every undo in reverse order; returns the (what, error) of the undos that failed."""
        failed: list[tuple[str, BaseException]] = []
        while self._items:
            what, undo = self._items.pop()
            try:
                undo()
                log.debug("undone: %s", what)
            except Exception as exc:
                log.warning("undo failed: %s: %s", what, exc)
                failed.append((what, exc))
        return failed


@contextmanager
def rolled_back(what: str) -> Iterator[UndoStack]:
    """An UndoStack for the steps of ``what`` (e.g. ``apply x1``): if the block raises, every
    undo runs and the error comes out as a ForwarderError naming ``what``."""
    undo = UndoStack()
    try:
        yield undo
    except BaseException as exc:
        log.debug("%s failed (%s); rolling back %d steps", what, exc, len(undo))
        undo.unwind()
        if isinstance(exc, Exception):
            raise to_forwarder_error(exc, what) from exc
        raise
