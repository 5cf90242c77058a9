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
* the **xenstore** ring on SPECIALPAGE_XENSTORE, published as
  HVM_PARAM_STORE_PFN/EVTCHN (``xen/xenstore/``).

The guest may close a backend port (EVTCHNOP_close/reset); as on Xen nobody
re-creates it, and that service goes quiet.
"""

from __future__ import annotations

from typing import Callable

from xen import abi
from xen.pv_console import PvConsole
from xen.special_pages import SpecialPages


class Toolstack:
    def __init__(self, domain, console_out: Callable[[bytes], None]):
        self.domain = domain
        self.special = SpecialPages(domain.vm)
        self.console = PvConsole(domain.vm.memory, self.special.gpa(abi.SPECIALPAGE_CONSOLE), console_out)
        port = domain.evtchn.bind_backend("console", self.console.guest_notified)
        self.console.connect(port, domain.evtchn.notify_guest)
        domain.hvm_params.provide(abi.HVM_PARAM_CONSOLE_PFN, self.special.pfn(abi.SPECIALPAGE_CONSOLE))
        domain.hvm_params.provide(abi.HVM_PARAM_CONSOLE_EVTCHN, port)

    def console_input(self, data: bytes) -> None:
        self.console.feed(data)
