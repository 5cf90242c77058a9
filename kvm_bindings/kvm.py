"""Thin, typed wrappers over the KVM ioctls: system, VM and vCPU file descriptors.

This module is the only place in the project that issues KVM ioctls.  Every
failure raises :class:`KvmError`, which names the ioctl and the errno.  The
wrappers do no policy: the VMM decides what to create and when.
"""

from __future__ import annotations

import errno as _errno
import mmap
import os
import struct as _struct
from dataclasses import dataclass
from typing import Iterable, Sequence

from kvm_bindings._kvm import ffi, lib

_ioctl = lib.vmm_ioctl
_ioctl_int = lib.vmm_ioctl_int

# The C helpers other packages call directly, under public names (the _kvm extension
# stays private to kvm_bindings; tests/test_layering.py checks that nobody imports it).
run_vcpu_fd = lib.vmm_kvm_run       # KVM_RUN on a vCPU fd: 0 or -errno; no Python frame, GIL released
run_vcpu_cached = lib.vmm_kvm_run_cached   # the same, answering cached port reads in C (vmm/port_cache.py)
# Lock-prefixed read-modify-writes on memory a running guest shares (a cffi pointer of
# the width's type: "__u64 *", "__u32 *", "__u8 *"); they return the old value.
atomic_or64 = lib.vmm_atomic_or64
atomic_and64 = lib.vmm_atomic_and64
atomic_or32 = lib.vmm_atomic_or32
atomic_and32 = lib.vmm_atomic_and32
atomic_xchg8 = lib.vmm_atomic_xchg8
atomic_xchg32 = lib.vmm_atomic_xchg32
atomic_cmpxchg32 = lib.vmm_atomic_cmpxchg32    # (ptr, old, new) -> the value found; stored iff == old


class KvmError(OSError):
    """A KVM ioctl failed.  ``.ioctl`` names it, ``.errno`` says why."""

    def __init__(self, ioctl: str, err: int, detail: str = ""):
        self.ioctl = ioctl
        msg = f"{ioctl} failed: {_errno.errorcode.get(err, err)} ({os.strerror(err)})"
        if detail:
            msg += f" [{detail}]"
        super().__init__(err, msg)

    def __str__(self) -> str:  # OSError's default prefixes "[Errno n]"
        return self.strerror


def _check(name: str, r: int, detail: str = "") -> int:
    if r < 0:
        raise KvmError(name, -r, detail)
    return r


def buffer_address(buf) -> int:
    """Host virtual address of a writable buffer (e.g. an mmap), for memory slots."""
    return int(ffi.cast("uintptr_t", ffi.from_buffer(buf)))


# ---------------------------------------------------------------- routes
@dataclass(frozen=True)
class IrqchipRoute:
    """GSI -> pin of the in-kernel PIC or IOAPIC."""
    gsi: int
    irqchip: int
    pin: int


@dataclass(frozen=True)
class MsiRoute:
    """GSI -> MSI message (used by irqfd and split-irqchip I/OAPIC pins)."""
    gsi: int
    address: int
    data: int


@dataclass(frozen=True)
class XenEvtchnRoute:
    """GSI -> Xen event channel port (KVM_IRQ_ROUTING_XEN_EVTCHN, 2-level)."""
    gsi: int
    port: int
    vcpu: int
    priority: int = lib.KVM_IRQ_ROUTING_XEN_EVTCHN_PRIO_2LEVEL


Route = IrqchipRoute | MsiRoute | XenEvtchnRoute


# ---------------------------------------------------------------- /dev/kvm
class Kvm:
    """The system fd (/dev/kvm)."""

    def __init__(self, path: str = "/dev/kvm"):
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise KvmError(f"open({path})", e.errno) from None
        version = _check("KVM_GET_API_VERSION", _ioctl_int(self.fd, lib.KVM_GET_API_VERSION, 0))
        if version != lib.KVM_API_VERSION:
            raise KvmError("KVM_GET_API_VERSION", _errno.EINVAL, f"version {version}")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def check_extension(self, cap: int) -> int:
        r = _ioctl_int(self.fd, lib.KVM_CHECK_EXTENSION, cap)
        return max(r, 0)

    def vcpu_mmap_size(self) -> int:
        return _check("KVM_GET_VCPU_MMAP_SIZE", _ioctl_int(self.fd, lib.KVM_GET_VCPU_MMAP_SIZE, 0))

    def supported_cpuid(self, max_entries: int = 256):
        """KVM_GET_SUPPORTED_CPUID as a ``struct kvm_cpuid2 *`` (owned cdata)."""
        cpuid = ffi.new("struct kvm_cpuid2 *", {"nent": max_entries, "entries": max_entries})
        _check("KVM_GET_SUPPORTED_CPUID", _ioctl(self.fd, lib.KVM_GET_SUPPORTED_CPUID, cpuid))
        return cpuid

    def msr_index_list(self) -> list[int]:
        """KVM_GET_MSR_INDEX_LIST: the MSRs a vCPU's state includes (saved by snapshots)."""
        probe = ffi.new("struct kvm_msr_list *", {"nmsrs": 0, "indices": 0})
        r = _ioctl(self.fd, lib.KVM_GET_MSR_INDEX_LIST, probe)
        if r < 0 and -r != _errno.E2BIG:
            _check("KVM_GET_MSR_INDEX_LIST", r)
        n = probe.nmsrs
        lst = ffi.new("struct kvm_msr_list *", {"nmsrs": n, "indices": n})
        lst.nmsrs = n
        _check("KVM_GET_MSR_INDEX_LIST", _ioctl(self.fd, lib.KVM_GET_MSR_INDEX_LIST, lst))
        return [lst.indices[i] for i in range(lst.nmsrs)]

    def create_vm(self, vm_type: int = 0) -> "VmFd":
        fd = _check("KVM_CREATE_VM", _ioctl_int(self.fd, lib.KVM_CREATE_VM, vm_type))
        return VmFd(self, fd)


# ---------------------------------------------------------------- VM
class VmFd:
    def __init__(self, kvm: Kvm, fd: int):
        self.kvm = kvm
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def check_extension(self, cap: int) -> int:
        return max(_ioctl_int(self.fd, lib.KVM_CHECK_EXTENSION, cap), 0)

    def enable_cap(self, cap: int, *args: int, flags: int = 0) -> None:
        ec = ffi.new("struct kvm_enable_cap *", {"cap": cap, "flags": flags, "args": list(args)})
        _check("KVM_ENABLE_CAP", _ioctl(self.fd, lib.KVM_ENABLE_CAP, ec), f"cap {cap}")

    def set_user_memory_region(self, slot: int, guest_phys_addr: int, size: int,
                               userspace_addr: int, flags: int = 0) -> None:
        region = ffi.new("struct kvm_userspace_memory_region *", {
            "slot": slot, "flags": flags, "guest_phys_addr": guest_phys_addr,
            "memory_size": size, "userspace_addr": userspace_addr})
        _check("KVM_SET_USER_MEMORY_REGION", _ioctl(self.fd, lib.KVM_SET_USER_MEMORY_REGION, region),
               f"slot {slot} gpa {guest_phys_addr:#x} size {size:#x}")

    def set_tss_addr(self, addr: int) -> None:
        _check("KVM_SET_TSS_ADDR", _ioctl_int(self.fd, lib.KVM_SET_TSS_ADDR, addr))

    def set_identity_map_addr(self, addr: int) -> None:
        p = ffi.new("__u64 *", addr)
        _check("KVM_SET_IDENTITY_MAP_ADDR", _ioctl(self.fd, lib.KVM_SET_IDENTITY_MAP_ADDR, p))

    # -- interrupt controllers
    def create_irqchip(self) -> None:
        _check("KVM_CREATE_IRQCHIP", _ioctl_int(self.fd, lib.KVM_CREATE_IRQCHIP, 0))

    def enable_split_irqchip(self, nr_ioapic_pins: int) -> None:
        self.enable_cap(lib.KVM_CAP_SPLIT_IRQCHIP, nr_ioapic_pins)

    def create_pit2(self) -> None:
        cfg = ffi.new("struct kvm_pit_config *")
        _check("KVM_CREATE_PIT2", _ioctl(self.fd, lib.KVM_CREATE_PIT2, cfg))

    def irq_line(self, gsi: int, level: int) -> None:
        lvl = ffi.new("struct kvm_irq_level *", {"irq": gsi, "level": level})
        _check("KVM_IRQ_LINE", _ioctl(self.fd, lib.KVM_IRQ_LINE, lvl), f"gsi {gsi}")

    def set_gsi_routing(self, routes: Sequence[Route]) -> None:
        n = len(routes)
        table = ffi.new("struct kvm_irq_routing *", {"nr": n, "entries": max(n, 1)})
        table.nr = n
        for i, r in enumerate(routes):
            e = table.entries[i]
            e.gsi = r.gsi
            if isinstance(r, IrqchipRoute):
                e.type = lib.KVM_IRQ_ROUTING_IRQCHIP
                e.u.irqchip.irqchip = r.irqchip
                e.u.irqchip.pin = r.pin
            elif isinstance(r, MsiRoute):
                e.type = lib.KVM_IRQ_ROUTING_MSI
                e.u.msi.address_lo = r.address & 0xFFFFFFFF
                e.u.msi.address_hi = r.address >> 32
                e.u.msi.data = r.data
            elif isinstance(r, XenEvtchnRoute):
                e.type = lib.KVM_IRQ_ROUTING_XEN_EVTCHN
                e.u.xen_evtchn.port = r.port
                e.u.xen_evtchn.vcpu = r.vcpu
                e.u.xen_evtchn.priority = r.priority
            else:
                raise TypeError(f"not a route: {r!r}")
        _check("KVM_SET_GSI_ROUTING", _ioctl(self.fd, lib.KVM_SET_GSI_ROUTING, table), f"{n} routes")

    def irqfd(self, fd: int, gsi: int, resample_fd: int | None = None, deassign: bool = False) -> None:
        flags = 0
        if deassign:
            flags |= lib.KVM_IRQFD_FLAG_DEASSIGN
        if resample_fd is not None:
            flags |= lib.KVM_IRQFD_FLAG_RESAMPLE
        req = ffi.new("struct kvm_irqfd *", {"fd": fd, "gsi": gsi, "flags": flags,
                                            "resamplefd": resample_fd or 0})
        _check("KVM_IRQFD", _ioctl(self.fd, lib.KVM_IRQFD, req), f"gsi {gsi}")

    def ioeventfd(self, fd: int, addr: int, length: int, *, pio: bool,
                  datamatch: int | None = None, deassign: bool = False) -> None:
        flags = (lib.KVM_IOEVENTFD_FLAG_PIO if pio else 0)
        if datamatch is not None:
            flags |= lib.KVM_IOEVENTFD_FLAG_DATAMATCH
        if deassign:
            flags |= lib.KVM_IOEVENTFD_FLAG_DEASSIGN
        req = ffi.new("struct kvm_ioeventfd *", {"datamatch": datamatch or 0, "addr": addr,
                                                "len": length, "fd": fd, "flags": flags})
        _check("KVM_IOEVENTFD", _ioctl(self.fd, lib.KVM_IOEVENTFD, req), f"addr {addr:#x}")

    def coalesced_zone(self, addr: int, size: int, *, pio: bool, register: bool = True) -> None:
        """KVM_(UN)REGISTER_COALESCED_MMIO: writes to [addr, addr + size) (ports if ``pio``)
        are queued in the ring page instead of exiting (VcpuFd.coalesced_ring)."""
        req = ffi.new("struct kvm_coalesced_mmio_zone *", {"addr": addr, "size": size, "pio": int(pio)})
        op, name = ((lib.KVM_REGISTER_COALESCED_MMIO, "KVM_REGISTER_COALESCED_MMIO") if register else
                    (lib.KVM_UNREGISTER_COALESCED_MMIO, "KVM_UNREGISTER_COALESCED_MMIO"))
        _check(name, _ioctl(self.fd, op, req), f"{'port' if pio else 'addr'} {addr:#x}")

    def signal_msi(self, address: int, data: int) -> int:
        """Inject one MSI.  Returns >0 if delivered, 0 if the guest blocked it."""
        msi = ffi.new("struct kvm_msi *", {"address_lo": address & 0xFFFFFFFF,
                                          "address_hi": address >> 32, "data": data})
        return _check("KVM_SIGNAL_MSI", _ioctl(self.fd, lib.KVM_SIGNAL_MSI, msi),
                      f"addr {address:#x} data {data:#x}")

    def set_msr_filter(self, ranges: Iterable[tuple[int, int, int, bytes]], default_deny: bool = False) -> None:
        """ranges: (flags, base, nmsrs, bitmap) where a 1 bit *allows* the access in-kernel."""
        f = ffi.new("struct kvm_msr_filter *")
        f.flags = lib.KVM_MSR_FILTER_DEFAULT_DENY if default_deny else lib.KVM_MSR_FILTER_DEFAULT_ALLOW
        keep = []
        for i, (flags, base, nmsrs, bitmap) in enumerate(ranges):
            buf = ffi.new("__u8[]", bytes(bitmap))
            keep.append(buf)
            f.ranges[i].flags = flags
            f.ranges[i].base = base
            f.ranges[i].nmsrs = nmsrs
            f.ranges[i].bitmap = buf
        _check("KVM_X86_SET_MSR_FILTER", _ioctl(self.fd, lib.KVM_X86_SET_MSR_FILTER, f))

    # -- Xen
    def xen_hvm_config(self, flags: int, msr: int) -> None:
        cfg = ffi.new("struct kvm_xen_hvm_config *", {"flags": flags, "msr": msr})
        _check("KVM_XEN_HVM_CONFIG", _ioctl(self.fd, lib.KVM_XEN_HVM_CONFIG, cfg))

    def xen_hvm_set_attr(self, attr) -> None:
        """attr: a ``struct kvm_xen_hvm_attr *`` built by the caller (see xen/)."""
        _check("KVM_XEN_HVM_SET_ATTR", _ioctl(self.fd, lib.KVM_XEN_HVM_SET_ATTR, attr), f"type {attr.type}")

    def xen_hvm_get_attr(self, attr) -> None:
        _check("KVM_XEN_HVM_GET_ATTR", _ioctl(self.fd, lib.KVM_XEN_HVM_GET_ATTR, attr), f"type {attr.type}")

    def xen_evtchn_send(self, port: int, vcpu: int,
                        priority: int = lib.KVM_IRQ_ROUTING_XEN_EVTCHN_PRIO_2LEVEL) -> None:
        e = ffi.new("struct kvm_irq_routing_xen_evtchn *", {"port": port, "vcpu": vcpu, "priority": priority})
        _check("KVM_XEN_HVM_EVTCHN_SEND", _ioctl(self.fd, lib.KVM_XEN_HVM_EVTCHN_SEND, e), f"port {port}")

    def get_clock(self) -> int:
        """KVM_GET_CLOCK: the VM's kvmclock in ns (what KVM writes into pvclock structures)."""
        data = ffi.new("struct kvm_clock_data *")
        _check("KVM_GET_CLOCK", _ioctl(self.fd, lib.KVM_GET_CLOCK, data))
        return data.clock

    def set_clock(self, clock: int) -> None:
        """KVM_SET_CLOCK: the VM's kvmclock (ns), as a restore continues it."""
        data = ffi.new("struct kvm_clock_data *", {"clock": clock})
        _check("KVM_SET_CLOCK", _ioctl(self.fd, lib.KVM_SET_CLOCK, data))

    # -- in-kernel irqchip and PIT state, as opaque bytes of the kernel's struct (snapshots)
    def get_irqchip(self, chip_id: int) -> bytes:
        chip = ffi.new("struct kvm_irqchip *", {"chip_id": chip_id})
        _check("KVM_GET_IRQCHIP", _ioctl(self.fd, lib.KVM_GET_IRQCHIP, chip), f"chip {chip_id}")
        return bytes(ffi.buffer(chip))

    def set_irqchip(self, data: bytes) -> None:
        chip = _opaque("struct kvm_irqchip *", data)
        _check("KVM_SET_IRQCHIP", _ioctl(self.fd, lib.KVM_SET_IRQCHIP, chip), f"chip {chip.chip_id}")

    def get_pit2(self) -> bytes:
        pit = ffi.new("struct kvm_pit_state2 *")
        _check("KVM_GET_PIT2", _ioctl(self.fd, lib.KVM_GET_PIT2, pit))
        return bytes(ffi.buffer(pit))

    def set_pit2(self, data: bytes) -> None:
        _check("KVM_SET_PIT2", _ioctl(self.fd, lib.KVM_SET_PIT2, _opaque("struct kvm_pit_state2 *", data)))

    def create_vcpu(self, vcpu_id: int) -> "VcpuFd":
        fd = _check("KVM_CREATE_VCPU", _ioctl_int(self.fd, lib.KVM_CREATE_VCPU, vcpu_id), f"id {vcpu_id}")
        return VcpuFd(self, fd, vcpu_id)


def _opaque(ctype: str, data: bytes):
    """A new ``ctype`` filled with ``data``, which must be exactly the kernel's size."""
    p = ffi.new(ctype)
    if len(data) != ffi.sizeof(p[0]):
        raise KvmError(ctype, _errno.EINVAL, f"{len(data)} bytes, the kernel's struct has {ffi.sizeof(p[0])}")
    ffi.buffer(p)[:] = data
    return p


# ---------------------------------------------------------------- register snapshots
# struct kvm_regs (uapi asm/kvm.h) is eighteen __u64 in this order; checked
# against the compiled layout so a reordering can't go unnoticed.  The port
# transport reads all of them with one unpack instead of one cffi attribute
# access per register (bench/hypercall.py).
REG_NAMES = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
             "r12", "r13", "r14", "r15", "rip", "rflags")
if ([ffi.offsetof("struct kvm_regs", n) for n in REG_NAMES] != list(range(0, 8 * len(REG_NAMES), 8))
        or ffi.sizeof("struct kvm_regs") != 8 * len(REG_NAMES)):
    raise ImportError("struct kvm_regs layout is not eighteen consecutive __u64")
REG = {n: i for i, n in enumerate(REG_NAMES)}
REGS_STRUCT = _struct.Struct(f"<{len(REG_NAMES)}Q")
_SYNC_REGS_OFF = lib.KVM_RUN_OFF_SYNC_REGS + ffi.offsetof("struct kvm_sync_regs", "regs")
_SYNC_CS_OFF = (lib.KVM_RUN_OFF_SYNC_REGS + ffi.offsetof("struct kvm_sync_regs", "sregs")
                + ffi.offsetof("struct kvm_sregs", "cs"))


# ---------------------------------------------------------------- vCPU
class VcpuFd:
    """A vCPU fd and its mmapped ``struct kvm_run``.

    ``run`` and the typed views of the exit union (``io``, ``mmio``, ...) all
    point into the one shared mapping (made once, via ``ffi.from_buffer``), so
    reading an exit copies nothing.
    """

    def __init__(self, vm: VmFd, fd: int, vcpu_id: int):
        self.vm = vm
        self.fd = fd
        self.id = vcpu_id
        size = vm.kvm.vcpu_mmap_size()
        self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        base = ffi.from_buffer(self._map)
        self.run_buffer = base
        self.run = ffi.cast("struct kvm_run *", base)
        self.io = ffi.cast("kvm_run_io_t *", base + lib.KVM_RUN_OFF_IO)
        self.mmio = ffi.cast("kvm_run_mmio_t *", base + lib.KVM_RUN_OFF_MMIO)
        self.internal = ffi.cast("kvm_run_internal_t *", base + lib.KVM_RUN_OFF_INTERNAL)
        self.system_event = ffi.cast("kvm_run_system_event_t *", base + lib.KVM_RUN_OFF_SYSTEM_EVENT)
        self.msr = ffi.cast("kvm_run_msr_t *", base + lib.KVM_RUN_OFF_MSR)
        self.fail_entry = ffi.cast("kvm_run_fail_entry_t *", base + lib.KVM_RUN_OFF_FAIL_ENTRY)
        self.eoi = ffi.cast("kvm_run_eoi_t *", base + lib.KVM_RUN_OFF_EOI)
        self.xen = ffi.cast("struct kvm_xen_exit *", base + lib.KVM_RUN_OFF_XEN)
        self.sync = ffi.cast("struct kvm_sync_regs *", base + lib.KVM_RUN_OFF_SYNC_REGS)
        self.sync_regs = ffi.addressof(self.sync, "regs")
        self.sync_sregs = ffi.addressof(self.sync, "sregs")
        # The raw mapping as a memoryview, for PIO data (at io.data_offset).
        self.run_view = memoryview(self._map)
        # Offsets into run_view for hot paths that read synced state as plain
        # bytes (REGS_STRUCT.unpack_from(run_view, sync_regs_offset)); and the
        # synced GPRs as uint64s (index with REG) for writing one back.
        self.sync_regs_offset = _SYNC_REGS_OFF
        self.sync_cs_l_offset = _SYNC_CS_OFF + ffi.offsetof("struct kvm_segment", "l")
        self.sync_cs_dpl_offset = _SYNC_CS_OFF + ffi.offsetof("struct kvm_segment", "dpl")
        self.sync_gprs = ffi.cast("uint64_t *", base + _SYNC_REGS_OFF)
        self.dirty_regs = ffi.cast("uint64_t *", ffi.addressof(self.run, "kvm_dirty_regs"))

    def coalesced_ring(self, page_offset: int):
        """The VM's coalesced-write ring (``struct kvm_coalesced_mmio_ring *``), mapped at
        ``page_offset`` pages into this vCPU's mapping (KVM_CAP_COALESCED_MMIO's answer),
        and its capacity in entries: what fits in the page after first/last."""
        ring = ffi.cast("struct kvm_coalesced_mmio_ring *", self.run_buffer + page_offset * mmap.PAGESIZE)
        entries = (mmap.PAGESIZE - ffi.sizeof("struct kvm_coalesced_mmio_ring")) // ffi.sizeof("struct kvm_coalesced_mmio")
        return ring, entries

    def close(self) -> None:
        if self.fd >= 0:
            self.run = self.io = self.mmio = None
            self.sync = self.sync_regs = self.sync_sregs = self.sync_gprs = self.dirty_regs = None
            self.run_view.release()
            self.run_buffer = None
            try:
                self._map.close()
            except BufferError:
                pass  # a cdata view is still alive somewhere; the fd close below is what matters
            os.close(self.fd)
            self.fd = -1

    # KVM_RUN: returns 0, or -errno (EINTR/EAGAIN are normal and handled by the caller).
    def run_once(self) -> int:
        return lib.vmm_kvm_run(self.fd)

    def get_regs(self):
        regs = ffi.new("struct kvm_regs *")
        _check("KVM_GET_REGS", _ioctl(self.fd, lib.KVM_GET_REGS, regs))
        return regs

    def set_regs(self, regs) -> None:
        _check("KVM_SET_REGS", _ioctl(self.fd, lib.KVM_SET_REGS, regs))

    def get_sregs(self):
        sregs = ffi.new("struct kvm_sregs *")
        _check("KVM_GET_SREGS", _ioctl(self.fd, lib.KVM_GET_SREGS, sregs))
        return sregs

    def set_sregs(self, sregs) -> None:
        _check("KVM_SET_SREGS", _ioctl(self.fd, lib.KVM_SET_SREGS, sregs))

    def get_fpu(self):
        fpu = ffi.new("struct kvm_fpu *")
        _check("KVM_GET_FPU", _ioctl(self.fd, lib.KVM_GET_FPU, fpu))
        return fpu

    def set_fpu(self, fpu) -> None:
        _check("KVM_SET_FPU", _ioctl(self.fd, lib.KVM_SET_FPU, fpu))

    def get_msrs(self, indices: Sequence[int]) -> dict[int, int]:
        msrs = ffi.new("struct kvm_msrs *", {"nmsrs": len(indices), "entries": len(indices)})
        msrs.nmsrs = len(indices)
        for i, idx in enumerate(indices):
            msrs.entries[i].index = idx
        n = _check("KVM_GET_MSRS", _ioctl(self.fd, lib.KVM_GET_MSRS, msrs))
        return {msrs.entries[i].index: msrs.entries[i].data for i in range(n)}

    def set_msrs(self, values: dict[int, int]) -> None:
        n = len(values)
        msrs = ffi.new("struct kvm_msrs *", {"nmsrs": n, "entries": n})
        msrs.nmsrs = n
        for i, (idx, val) in enumerate(values.items()):
            msrs.entries[i].index = idx
            msrs.entries[i].data = val
        done = _check("KVM_SET_MSRS", _ioctl(self.fd, lib.KVM_SET_MSRS, msrs))
        if done != n:
            bad = msrs.entries[done].index
            raise KvmError("KVM_SET_MSRS", _errno.EINVAL, f"MSR {bad:#x} rejected")

    def set_cpuid2(self, cpuid) -> None:
        _check("KVM_SET_CPUID2", _ioctl(self.fd, lib.KVM_SET_CPUID2, cpuid))

    def get_lapic(self):
        lapic = ffi.new("struct kvm_lapic_state *")
        _check("KVM_GET_LAPIC", _ioctl(self.fd, lib.KVM_GET_LAPIC, lapic))
        return lapic

    def set_lapic(self, lapic) -> None:
        _check("KVM_SET_LAPIC", _ioctl(self.fd, lib.KVM_SET_LAPIC, lapic))

    def get_mp_state(self) -> int:
        st = ffi.new("struct kvm_mp_state *")
        _check("KVM_GET_MP_STATE", _ioctl(self.fd, lib.KVM_GET_MP_STATE, st))
        return st.mp_state

    def set_mp_state(self, state: int) -> None:
        st = ffi.new("struct kvm_mp_state *", {"mp_state": state})
        _check("KVM_SET_MP_STATE", _ioctl(self.fd, lib.KVM_SET_MP_STATE, st))

    def get_vcpu_events(self):
        ev = ffi.new("struct kvm_vcpu_events *")
        _check("KVM_GET_VCPU_EVENTS", _ioctl(self.fd, lib.KVM_GET_VCPU_EVENTS, ev))
        return ev

    def set_vcpu_events(self, ev) -> None:
        _check("KVM_SET_VCPU_EVENTS", _ioctl(self.fd, lib.KVM_SET_VCPU_EVENTS, ev))

    def get_tsc_khz(self) -> int:
        return _check("KVM_GET_TSC_KHZ", _ioctl_int(self.fd, lib.KVM_GET_TSC_KHZ, 0))

    # -- state a snapshot saves as opaque bytes of the kernel's struct (vmm/vcpu.py VcpuState)
    def get_state_bytes(self, what: str) -> bytes:
        ctype, get, _ = _VCPU_STATE[what]
        p = ffi.new(ctype)
        _check(f"KVM_GET_{what.upper()}", _ioctl(self.fd, get, p))
        return bytes(ffi.buffer(p))

    def set_state_bytes(self, what: str, data: bytes) -> None:
        ctype, _, put = _VCPU_STATE[what]
        _check(f"KVM_SET_{what.upper()}", _ioctl(self.fd, put, _opaque(ctype, data)))

    def set_tsc_khz(self, khz: int) -> None:
        _check("KVM_SET_TSC_KHZ", _ioctl_int(self.fd, lib.KVM_SET_TSC_KHZ, khz), f"{khz} kHz")

    def get_msrs_best_effort(self, indices: Sequence[int]) -> dict[int, int]:
        """KVM_GET_MSRS of every index KVM will read; those it refuses are left out
        (KVM stops at the first one it can't read: skip it and go on)."""
        out: dict[int, int] = {}
        rest = list(indices)
        while rest:
            got = self.get_msrs(rest)
            out.update(got)
            rest = rest[len(got) + 1:]
        return out

    def set_msrs_best_effort(self, values: dict[int, int]) -> list[int]:
        """KVM_SET_MSRS of every value; returns the indices KVM refused."""
        refused = []
        items = list(values.items())
        while items:
            n = len(items)
            msrs = ffi.new("struct kvm_msrs *", {"nmsrs": n, "entries": n})
            msrs.nmsrs = n
            for i, (idx, val) in enumerate(items):
                msrs.entries[i].index = idx
                msrs.entries[i].data = val
            done = _check("KVM_SET_MSRS", _ioctl(self.fd, lib.KVM_SET_MSRS, msrs))
            if done < n:
                refused.append(items[done][0])
            items = items[done + 1:]
        return refused

    def nmi(self) -> None:
        _check("KVM_NMI", _ioctl_int(self.fd, lib.KVM_NMI, 0))

    def interrupt(self, vector: int) -> None:
        """KVM_INTERRUPT: an external interrupt from a userspace PIC.  With the split
        irqchip KVM holds one (EEXIST while one waits) and injects it once LINT0 accepts
        ExtINT and the guest can take it (Documentation/virt/kvm/api.rst)."""
        irq = ffi.new("struct kvm_interrupt *", {"irq": vector})
        _check("KVM_INTERRUPT", _ioctl(self.fd, lib.KVM_INTERRUPT, irq), f"vector {vector:#x}")

    def xen_vcpu_set_attr(self, attr) -> None:
        _check("KVM_XEN_VCPU_SET_ATTR", _ioctl(self.fd, lib.KVM_XEN_VCPU_SET_ATTR, attr), f"type {attr.type}")

    def xen_vcpu_get_attr(self, attr) -> None:
        _check("KVM_XEN_VCPU_GET_ATTR", _ioctl(self.fd, lib.KVM_XEN_VCPU_GET_ATTR, attr), f"type {attr.type}")


# name -> (ctype, GET ioctl, SET ioctl): vCPU state kept as the kernel's bytes
_VCPU_STATE = {
    "regs": ("struct kvm_regs *", lib.KVM_GET_REGS, lib.KVM_SET_REGS),
    "sregs": ("struct kvm_sregs *", lib.KVM_GET_SREGS, lib.KVM_SET_SREGS),
    "fpu": ("struct kvm_fpu *", lib.KVM_GET_FPU, lib.KVM_SET_FPU),
    "xsave": ("struct kvm_xsave *", lib.KVM_GET_XSAVE, lib.KVM_SET_XSAVE),
    "xcrs": ("struct kvm_xcrs *", lib.KVM_GET_XCRS, lib.KVM_SET_XCRS),
    "lapic": ("struct kvm_lapic_state *", lib.KVM_GET_LAPIC, lib.KVM_SET_LAPIC),
    "mp_state": ("struct kvm_mp_state *", lib.KVM_GET_MP_STATE, lib.KVM_SET_MP_STATE),
    "vcpu_events": ("struct kvm_vcpu_events *", lib.KVM_GET_VCPU_EVENTS, lib.KVM_SET_VCPU_EVENTS),
    "debugregs": ("struct kvm_debugregs *", lib.KVM_GET_DEBUGREGS, lib.KVM_SET_DEBUGREGS),
}
VCPU_STATE_NAMES = tuple(_VCPU_STATE)
