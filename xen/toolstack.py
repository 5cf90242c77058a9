"""What Xen's toolstack and dom0 daemons give a domU, done by the VMM.

On a real Xen host, libxl/libxenguest build the domain (the special pages,
tools/libs/guest/xg_dom_x86.c), allocate the console and xenstore event
channels, set the HVM params that tell the guest where both are, and
xenconsoled / xenstored serve the rings from dom0.  Here the VMM is dom0:

* the **special-page region** below gfn 0xff000, reserved in the E820
  (``xen/special_pages.py``);
* the **PV console** on SPECIALPAGE_CONSOLE, its port a backend port
  (``EventChannels.bind_backend``), published as HVM_PARAM_CONSOLE_PFN/EVTCHN
  (``xen/pv_console.py``);
* the **xenstore** ring on SPECIALPAGE_XENSTORE, its port a backend port,
  published as HVM_PARAM_STORE_PFN/EVTCHN; the daemon (``xen/xenstore/``) holds
  the nodes libxl writes for a domU (``populate_domain``) plus the user's
  ``--xenstore PATH=VALUE`` (``xen/xenstore_backend.py``);
* the **shutdown request**: the toolstack writes control/shutdown (``xl
  shutdown``), which Linux's xenbus watches (drivers/xen/manage.c).

The guest may close a backend port (EVTCHNOP_close/reset); as on Xen nobody
re-creates it, and that service goes quiet.
"""

from __future__ import annotations

import uuid

from typing import Callable

from xen import abi
from xen.pv_console import PvConsole
from xen.special_pages import SpecialPages
from xen.xenstore import populate
from xen.xenstore import snapshot as xs_snapshot
from xen.xenstore.daemon import XenstoreDaemon
from xen.xenstore.store import XsError
from xen.xenstore_backend import XenstoreBackend

CONTROL_SHUTDOWN = "control/shutdown"    # drivers/xen/manage.c: "poweroff", "reboot", "halt", ...


class Toolstack:
    def __init__(self, domain, console_out: Callable[[bytes], None], name: str = "guest",
                 xenstore: tuple[tuple[str, str], ...] = ()):
        self.domain = domain
        ev, params = domain.evtchn, domain.hvm_params
        self.special = SpecialPages(domain.vm)

        self.console = PvConsole(domain.vm.memory, self.special.gpa(abi.SPECIALPAGE_CONSOLE), console_out)
        console_port = ev.bind_backend("console", self.console.guest_notified)
        self.console.connect(console_port, ev.notify_guest)
        params.provide(abi.HVM_PARAM_CONSOLE_PFN, self.special.pfn(abi.SPECIALPAGE_CONSOLE))
        params.provide(abi.HVM_PARAM_CONSOLE_EVTCHN, console_port)

        self.daemon = XenstoreDaemon()
        self.xenstore = XenstoreBackend(self.daemon, domain.domid, domain.vm.memory,
                                        self.special.gpa(abi.SPECIALPAGE_XENSTORE))
        store_port = ev.bind_backend("xenstore", self.xenstore.guest_notified)
        self.xenstore.connect(store_port, ev.notify_guest)
        params.provide(abi.HVM_PARAM_STORE_PFN, self.special.pfn(abi.SPECIALPAGE_XENSTORE))
        params.provide(abi.HVM_PARAM_STORE_EVTCHN, store_port)
        nr_vcpus = len(domain.vm.vcpus)
        memkb = domain.vm.memory.size >> 10
        populate.populate_domain(self.daemon, populate.DomainInfo(
            domid=domain.domid, name=name, max_memkb=memkb, target_memkb=memkb,
            store_port=store_port, store_ring_ref=self.special.pfn(abi.SPECIALPAGE_XENSTORE),
            vcpus=nr_vcpus, uuid=str(uuid.UUID(bytes=domain.handle)),
            console=populate.PvConsole(port=console_port, ring_ref=self.special.pfn(abi.SPECIALPAGE_CONSOLE))))
        for path, value in xenstore:
            self.xenstore_write(path, value)

    def xenstore_write(self, path: str, value: str) -> None:
        """Write a node as the toolstack; a path relative to the domain's home
        (/local/domain/<id>/) as in ``xenstore-write`` run for the guest."""
        full = path if path.startswith("/") else f"/local/domain/{self.domain.domid}/{path}"
        try:
            self.xenstore.write(full, value)
        except XsError as e:
            raise ValueError(f"xenstore write {full}: {e}") from None

    def request_shutdown(self, reason: str = "poweroff") -> bool:
        """``xl shutdown``: ask the guest to shut down through control/shutdown.  False
        if nobody in the guest watches that node (no xenbus yet, or no PV drivers): the
        request would go unheard."""
        path = f"/local/domain/{self.domain.domid}/{CONTROL_SHUTDOWN}"
        if not self.xenstore.watched(path):
            return False
        self.xenstore.write(path, reason)
        return True

    # ------------------------------------------------------------ snapshot
    def save(self) -> dict:
        """The daemon's state (xen/xenstore/snapshot.py) and the PV console's input
        backlog; both rings' indexes and bytes are guest memory."""
        return {"xenstore": xs_snapshot.save(self.daemon), "console": self.console.save()}

    def restore(self, state: dict) -> None:
        """Into the toolstack this run built (same ports and pages: EventChannels.restore
        checked the backend ports): what the build populated is replaced."""
        xs_snapshot.restore(self.daemon, state["xenstore"])
        self.console.restore(state["console"])

    def console_input(self, data: bytes) -> None:
        self.console.feed(data)
