"""Holding a device thread between its service steps, for snapshots (ARCHITECTURE.md, "Snapshots").

A snapshot pauses the vCPUs, but a virtio device's thread may be half way through a
batch of requests: chains popped and not yet pushed, an interrupt decided and not yet
sent.  Saved then, the queue's indices would not match guest memory.  The thread
brackets every service step (one batch of one queue and the interrupts it decided) with
``begin()``/``end()``; ``hold()`` asks the steps to stop (a batch looks at ``held``
before each request and ends early) and returns once none runs; the next ``begin()``
waits until ``release()``.  Not a lock around the step: the snapshot takes other locks
(the PCI config lock) that rank above the device's, and must not wait for a whole batch.

The condition is a leaf (``virtio.hold`` in vmm/locks.py): the thread takes it with
nothing held, the snapshot under ``vm.control`` only.
"""

from __future__ import annotations

from vmm.locks import ordered_condition


class ServiceHold:
    def __init__(self):
        self._cv = ordered_condition("virtio.hold")
        self.held = False                 # read without the lock by a running batch: a hint to stop
        self._busy = 0                    # service steps running
        self._stopped = False

    def begin(self) -> bool:
        """Before a service step (no lock held): wait while held, then count the step.
        False once stopped (the VM ended): the step must not run."""
        with self._cv:
            while self.held and not self._stopped:
                self._cv.wait()
            if self._stopped:
                return False
            self._busy += 1
            return True

    def end(self) -> None:
        with self._cv:
            self._busy -= 1
            if not self._busy:
                self._cv.notify_all()

    def hold(self, timeout: float, what: str) -> None:
        """Until ``release()``: returns once no step runs.  TimeoutError (and not held) if one
        still runs after ``timeout`` seconds (a request stuck on its backing file); ``what``
        names the device in its message."""
        with self._cv:
            self.held = True
            if not self._cv.wait_for(lambda: not self._busy, timeout):
                self.held = False
                self._cv.notify_all()
                raise TimeoutError(f"{what}: a request still runs after {timeout:g} s")

    def release(self) -> None:
        with self._cv:
            self.held = False
            self._cv.notify_all()

    def stop(self) -> None:
        """The device stops: a step waiting for a release gives up, and none starts again."""
        with self._cv:
            self._stopped = True
            self._cv.notify_all()


__all__ = ["ServiceHold"]
