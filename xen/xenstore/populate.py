"""The nodes a toolstack writes for a new domU, as xl/libxl does.

From xen-project/xen tools/libs/light/:

* libxl_create.c ``libxl__domain_make``: /local/domain/<id> and /vm/<uuid> readable by
  the domain only (``roperm`` = n0 r<id>), ``vm``, ``name`` (``libxl__domain_rename``),
  ``cpu``, ``memory``, ``device``, ``control`` (and ``hvmloader`` for HVM) read-only
  for it; the nodes the guest writes owned by it (``rwperm`` = n<id>):
  ``device/suspend/event-channel``, ``control/shutdown``, ``control/feature-poweroff``,
  ``-reboot``, ``-suspend`` (``-s3``, ``-s4`` for HVM), ``control/sysrq``, ``data``,
  ``drivers``, ``feature``, ``attr``, ``error``; then
  ``control/platform-feature-multiprocessor-suspend`` and
  ``control/platform-feature-xs_reset_watches`` = 1, all in one transaction.
  (/libxl/<id>, the toolstack's private tree, is left out: nothing reads it here.)
* libxl_dom.c ``libxl__build_post``: ``memory/static-max``, ``memory/target``,
  ``memory/videoram``, ``domid``, ``store/port``, ``store/ring-ref``,
  ``cpu/<n>/availability`` ("online"/"offline"), inheriting their parents' permissions.
* libxl_console.c ``libxl__device_console_add`` + libxl_device.c
  ``libxl__device_generic_add`` for the primary PV console: /local/domain/<id>/console
  read-only for the domain (n<backend> r<id>) with ``backend``, ``backend-id``
  (n<id> r<backend>), ``limit``, ``type``, ``output``, ``tty``, ``port``, ``ring-ref``;
  the backend directory /local/domain/<backend>/backend/console/<id>/0 (n<backend>
  r<id>) with ``frontend``, ``frontend-id``, ``online``, ``state``, ``protocol``.

Every write is the privileged domain's (the VMM's), so nodes it creates inherit their
parent's permissions unchanged (core.c ``construct_node``).
"""

from __future__ import annotations

from dataclasses import dataclass

from xen import abi
from xen.abi import XenErrno

from .daemon import XenstoreDaemon
from .store import XsError, domain_path

XENCONSOLE_LIMIT = 1048576       # libxl_internal.h LIBXL_XENCONSOLE_LIMIT
XENCONSOLE_PROTOCOL = "vt100"    # libxl_internal.h LIBXL_XENCONSOLE_PROTOCOL
XENBUS_STATE_INITIALISING = 1    # public/io/xenbus.h XenbusStateInitialising


@dataclass
class PvConsole:
    """The primary PV console's page and port (HVM_PARAM_CONSOLE_PFN/_EVTCHN)."""
    port: int
    ring_ref: int                # the console page's gfn
    backend_domid: int = 0
    output: str = "pty"
    type: str = "xenconsoled"    # or "ioemu"
    tty: str = ""


@dataclass
class DomainInfo:
    """What the toolstack writes about a new domain."""
    domid: int
    name: str
    max_memkb: int
    target_memkb: int
    store_port: int
    store_ring_ref: int          # the xenstore page's gfn (HVM_PARAM_STORE_PFN)
    vcpus: int = 1
    vcpus_online: int | None = None      # the first N are online; None: all
    video_memkb: int = 0
    uuid: str = "00000000-0000-0000-0000-000000000000"
    hvm: bool = True
    console: PvConsole | None = None


class _Tx:
    """Requests of the VMM inside one transaction (caller holds the daemon's lock)."""

    def __init__(self, daemon: XenstoreDaemon):
        self.d = daemon
        self.id = int(daemon.request(daemon.vmm, abi.XS_TRANSACTION_START, b"\0").rstrip(b"\0"))

    def _req(self, type_, *args: bytes) -> None:
        self.d.request(self.d.vmm, type_, b"".join(args), self.id)

    def write(self, path: str, value) -> None:
        self._req(abi.XS_WRITE, path.encode(), b"\0", str(value).encode())

    def rm(self, path: str) -> None:
        """xs_rm, its failure ignored as libxl does (ENOENT when the parent is missing)."""
        try:
            self._req(abi.XS_RM, path.encode(), b"\0")
        except XsError as e:
            if e.err != XenErrno.ENOENT:
                raise

    def mkdir(self, path: str) -> None:
        self._req(abi.XS_MKDIR, path.encode(), b"\0")

    def set_perms(self, path: str, perms: list[str]) -> None:
        self._req(abi.XS_SET_PERMS, path.encode(), b"\0", *(p.encode() + b"\0" for p in perms))

    def mknod(self, path: str, perms: list[str]) -> None:
        """libxl_xshelp.c ``libxl__xs_mknod``: an empty value, then the permissions."""
        self.write(path, "")
        self.set_perms(path, perms)

    def commit(self) -> None:
        self._req(abi.XS_TRANSACTION_END, b"T\0")


def populate_domain(daemon: XenstoreDaemon, info: DomainInfo) -> None:
    """Write a new domain's nodes (the domain should be introduced first, so that
    permissions naming it count)."""
    d = info.domid
    priv = daemon.priv_domid
    dom = domain_path(d)
    vm = f"/vm/{info.uuid}"
    roperm = [f"n{priv}", f"r{d}"]
    rwperm = [f"n{d}"]
    with daemon.lock:
        t = _Tx(daemon)                                   # libxl__domain_make
        t.rm(dom)
        t.mknod(dom, roperm)
        t.rm(vm)
        t.mknod(vm, roperm)
        t.write(f"{dom}/vm", vm)
        t.write(f"{dom}/name", info.name)                 # libxl__domain_rename
        t.write(f"{vm}/name", info.name)
        for sub in ("cpu", "memory", "device"):
            t.mknod(f"{dom}/{sub}", roperm)
        t.mknod(f"{dom}/device/suspend/event-channel", rwperm)
        t.mknod(f"{dom}/control", roperm)
        if info.hvm:
            t.mknod(f"{dom}/hvmloader", roperm)
        control = ["shutdown", "feature-poweroff", "feature-reboot", "feature-suspend"]
        if info.hvm:
            control += ["feature-s3", "feature-s4"]
        for c in control + ["sysrq"]:
            t.mknod(f"{dom}/control/{c}", rwperm)
        for sub in ("data", "drivers", "feature", "attr", "error"):
            t.mknod(f"{dom}/{sub}", rwperm)
        t.write(f"{vm}/uuid", info.uuid)
        t.write(f"{dom}/control/platform-feature-multiprocessor-suspend", 1)
        t.write(f"{dom}/control/platform-feature-xs_reset_watches", 1)
        t.commit()

        t = _Tx(daemon)                                   # libxl__build_post
        online = info.vcpus if info.vcpus_online is None else info.vcpus_online
        for k, v in (("memory/static-max", info.max_memkb), ("memory/target", info.target_memkb),
                     ("memory/videoram", info.video_memkb), ("domid", d),
                     ("store/port", info.store_port), ("store/ring-ref", info.store_ring_ref)):
            t.write(f"{dom}/{k}", v)
        for i in range(info.vcpus):
            t.write(f"{dom}/cpu/{i}/availability", "online" if i < online else "offline")
        t.commit()

        if info.console is not None:
            _console(daemon, info, info.console)


def _console(daemon: XenstoreDaemon, info: DomainInfo, con: PvConsole) -> None:
    """libxl__device_console_add for console 0 (libxl__device_generic_add)."""
    d, b = info.domid, con.backend_domid
    front = f"{domain_path(d)}/console"
    back = f"{domain_path(b)}/backend/console/{d}/0"
    front_perms = [f"n{d}", f"r{b}"]
    ro_front_perms = [f"n{b}", f"r{d}"]
    back_perms = [f"n{b}", f"r{d}"]
    t = _Tx(daemon)
    t.rm(front)
    t.mkdir(front)
    t.set_perms(front, ro_front_perms)         # console 0: the guest may not write here
    t.write(f"{front}/backend", back)
    t.write(f"{front}/backend-id", b)
    t.set_perms(f"{front}/backend-id", front_perms)
    for k, v in (("limit", XENCONSOLE_LIMIT), ("type", con.type), ("output", con.output),
                 ("tty", con.tty), ("port", con.port), ("ring-ref", con.ring_ref)):
        t.write(f"{front}/{k}", v)
        t.set_perms(f"{front}/{k}", ro_front_perms)
    t.rm(back)
    t.mkdir(back)
    t.set_perms(back, back_perms)
    t.write(f"{back}/frontend", front)
    for k, v in (("frontend-id", d), ("online", 1), ("state", XENBUS_STATE_INITIALISING),
                 ("protocol", XENCONSOLE_PROTOCOL)):
        t.write(f"{back}/{k}", v)
    t.commit()
