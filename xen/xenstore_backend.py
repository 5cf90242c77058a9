"""The xenstore backend: the VMM as xenstored for the guest's xenstore ring.

On Xen the toolstack puts a ``struct xenstore_domain_interface`` page
(public/io/xs_wire.h) in the guest's special-page region, allocates an event
channel whose other end xenstored binds, and tells the guest both through
HVM_PARAM_STORE_PFN and HVM_PARAM_STORE_EVTCHN (xenbus in Linux reads them in
``xenbus_init``).  Here the page is the VMM-backed SPECIALPAGE_XENSTORE, the
channel's remote end is the VMM (``EventChannels.bind_backend``), and the daemon
is ``xen/xenstore/`` with the domain introduced and populated as libxl does.

Where requests are served: on the thread that notified, after its locks are
released (``bind_backend``'s contract).  A guest's EVTCHNOP_send on the store port
therefore answers its requests before the hypercall returns, with no thread hop
(the round trip the guest waits for is the whole cost), and a guest that floods the
ring spends its own vCPU's time on it, not a shared daemon thread's.  The VMM's own
writes (``write``: control/shutdown on SIGTERM, ``--xenstore PATH=VALUE``) serve
the ring from the writer's thread the same way, so the watch events they fire
reach the guest at once.  Everything happens under the daemon's lock
(``xen.xenstore``, first in the lock order but for ``vm.exit``); the guest is
notified after it is released.
"""

from __future__ import annotations

from typing import Callable

from xen.xenstore.daemon import XenstoreDaemon
from xen.xenstore.ring import XenstoreRing
from xen.xenstore.store import is_child


class XenstoreBackend:
    def __init__(self, daemon: XenstoreDaemon, domid: int, memory, gpa: int):
        self.daemon = daemon
        self.domid = domid
        self.conn = daemon.introduce(domid)
        self.ring = XenstoreRing(daemon, self.conn, memory, gpa)
        self.ring.start()
        self.port: int | None = None
        self._notify_guest: Callable[[int], object] | None = None

    def connect(self, port: int, notify_guest: Callable[[int], object]) -> None:
        """The event channel's guest end is ``port``; ``notify_guest(port)`` kicks it."""
        self.port = port
        self._notify_guest = notify_guest

    def guest_notified(self) -> None:
        """The guest sent on the store port: new requests, or room for answers."""
        self.serve()

    def serve(self) -> None:
        """Read requests, answer them, write what fits; notify the guest if the ring moved."""
        with self.daemon.lock:
            notify = self.ring.process_locked()
            self.daemon.take_dirty_locked()          # one guest connection: its ring was just served
        if notify and self.port is not None:
            self._notify_guest(self.port)

    # ------------------------------------------------------------ the VMM's own access
    def write(self, path: str, value: str) -> None:
        """Write as the toolstack (dom0) and deliver the watch events it fires."""
        self.daemon.write(path, value)
        self.serve()

    def read(self, path: str) -> str | None:
        v = self.daemon.read(path)
        return None if v is None else v.decode("latin-1")

    def watched(self, path: str) -> bool:
        """Does the guest watch ``path`` (or a node above it)?  The toolstack asks before
        it relies on the guest reacting to a write there (control/shutdown)."""
        with self.daemon.lock:
            return any(is_child(path, w.path) for w in self.conn.watches)
