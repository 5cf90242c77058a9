"""Errors: the user's (one line, exit status 2) and the VMM's own (never swallowed).

:class:`UserError` — bad input from the user: a missing file, a bad image, a bad
size string.  ``vmm run`` prints it as one line and exits with 2.

Internal errors: a VMM bug seen by any thread is never swallowed.

Every thread of ours that catches an unexpected exception so that it can keep
serving the guest (a hypercall handler, the Xen timer thread, the irqchip's
delivery thread, device threads, the console input thread, a vCPU thread's
catch-all) hands it to :func:`internal_error`: it is
printed with its traceback, counted (``--stats``: ``internal-errors``),
traced (``vmm.internal_error``) and, when the VM ends, summarised in one
line; ``vmm run`` then exits with ``VMM_ERROR`` (1) however the guest ended,
so a test run can't miss it.

The count is process-wide: one process runs one VM.
"""

from __future__ import annotations

import sys
import threading

from vmm.trace_events import TP_VMM_INTERNAL_ERROR as TP_INTERNAL_ERROR


class UserError(Exception):
    """Bad input from the user: a missing file, a bad image, a bad size string."""


_lock = threading.Lock()
_errors: list[str] = []


def internal_error(where: str, exc: BaseException | None = None, detail: str = "") -> None:
    """Report a VMM bug seen in ``where`` (call it from an ``except`` block, or with a message)."""
    what = repr(exc) if exc is not None else detail
    with _lock:
        _errors.append(f"{where}: {what}")
    if TP_INTERNAL_ERROR.enabled:
        TP_INTERNAL_ERROR.emit(where=where, error=what)
    import traceback            # (only here: every `vmm` start imports this module)
    text = "".join(traceback.format_exception(exc)) if exc is not None else detail + "\n"
    sys.stderr.write(f"vmm: internal error in {where}:\n{text}")
    sys.stderr.flush()


def internal_errors() -> list[str]:
    with _lock:
        return list(_errors)


def reset_internal_errors() -> None:
    """For in-process tests that build several VMs."""
    with _lock:
        _errors.clear()


__all__ = ["UserError", "internal_error", "internal_errors", "reset_internal_errors"]
