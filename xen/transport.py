"""The two ways a hypercall reaches the VMM.

**kernel** — a KVM built with CONFIG_KVM_XEN: ``KVM_XEN_HVM_CONFIG`` with
``INTERCEPT_HCALL`` makes every VMCALL/VMMCALL (direct, as modern Linux
issues them, or through the hypercall page KVM fills on the MSR write) exit
with ``KVM_EXIT_XEN``; we answer through ``run->xen.u.hcall.result``.  KVM
also uses the Xen "long mode" flag for the shared_info layout, and Linux
since the XSA-466 change never writes the hypercall MSR that would set it,
so we set KVM_XEN_ATTR_TYPE_LONG_MODE ourselves from the first call's mode.

**port** — any KVM (ours has no Xen support and spins forever on VMCALL).
An MSR filter sends the guest's write of the hypercall MSR to us; we fill
the page with 32-byte stubs ``mov $nr,%eax; out %eax,$HCALL_PORT; ret`` (the
same encoding works in 64-bit and compat mode).  The port write exits; the
arguments are read from the registers KVM syncs into ``kvm_run`` (no
GET_REGS ioctl, which would double the cost of an exit) and the result goes
back through the same area.  Guests that issue VMCALL directly need the
kernel transport.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvm_bindings import consts
from kvm_bindings.kvm import REG, REGS_STRUCT
from vmm import exitcodes
from vmm.vcpu import current_vcpu
from vmm.x86 import PAGE_SIZE
from xen.abi import HYPERCALL_STUB_SIZE
from xen.hypercall import HYPERCALL_PAGE_ENTRIES, MASK32, MASK64, Hypercall
from xen.trace_events import TP_XEN_HCALL_PAGE as TP_HCALL_PAGE, TP_XEN_MSR as TP_MSR

if TYPE_CHECKING:
    from xen.domain import XenDomain

HYPERCALL_MSR = 0x40000000    # CPUID base+2 EBX tells the guest; must be non-zero for INTERCEPT_HCALL
HCALL_PORT = 0xE4             # free on a PC, reachable with `out imm8` (avoid 0x7e: KVM treats it specially)
SYNC_REGS = consts.KVM_SYNC_X86_REGS
_unpack_regs = REGS_STRUCT.unpack_from
_RAX, _RBX, _RCX, _RDX, _RSI, _RDI, _RBP, _R8, _R9, _R10 = (
    REG[n] for n in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10"))


def port_stub(nr: int) -> bytes:
    code = bytes([0xB8]) + nr.to_bytes(4, "little") + bytes([0xE7, HCALL_PORT, 0xC3])
    return code + b"\xCC" * (HYPERCALL_STUB_SIZE - len(code))   # int3 padding, never reached


class PortTransport:
    name = "port"

    def __init__(self, domain: "XenDomain"):
        self.domain = domain
        vm = domain.vm
        vm.fd.enable_cap(consts.KVM_CAP_X86_USER_SPACE_MSR, consts.KVM_MSR_EXIT_REASON_FILTER)
        # A 0 bit denies the access in the kernel, i.e. sends it to us.
        rw = consts.KVM_MSR_FILTER_READ | consts.KVM_MSR_FILTER_WRITE
        vm.fd.set_msr_filter([(rw, HYPERCALL_MSR, 1, b"\x00")])
        for v in vm.vcpus:
            v.exit_handlers[consts.KVM_EXIT_X86_WRMSR] = self._wrmsr
            v.exit_handlers[consts.KVM_EXIT_X86_RDMSR] = self._rdmsr
            v.fd.run.kvm_valid_regs = consts.KVM_SYNC_X86_REGS | consts.KVM_SYNC_X86_SREGS
        vm.pio_bus.register(HCALL_PORT, 4, self, "xen-hypercall")
        self._dispatch = domain.hypercalls.dispatch
        self._memory = vm.memory

    # -- the hypercall MSR
    def _wrmsr(self, vcpu) -> None:
        m = vcpu.fd.msr
        index, value = m.index, m.data
        m.error = 0
        if index != HYPERCALL_MSR:
            m.error = 1
            result = "#GP (not ours)"
        elif value & (PAGE_SIZE - 1):
            m.error = 1                 # page index != 0: we offer one page (xen/arch/x86/msr.c)
            result = "#GP (page index)"
        else:
            gpa = value & ~(PAGE_SIZE - 1)
            mem = self.domain.vm.memory
            if not mem.check(gpa, PAGE_SIZE):
                m.error = 1
                result = "#GP (not RAM)"
            else:
                mem.write(gpa, b"".join(port_stub(nr) for nr in range(HYPERCALL_PAGE_ENTRIES)))
                result = "filled"
            if TP_HCALL_PAGE.enabled:
                TP_HCALL_PAGE.emit(vcpu.id, gpa=gpa, transport=self.name, result=result)
        if TP_MSR.enabled:
            TP_MSR.emit(vcpu.id, dir="wrmsr", index=index, value=value, result=result)

    def _rdmsr(self, vcpu) -> None:
        m = vcpu.fd.msr
        if m.index == HYPERCALL_MSR:
            m.data, m.error = 0, 0      # xen/arch/x86/msr.c guest_rdmsr_xen: "Read as zero"
            result = "0"
        else:
            m.error, result = 1, "#GP (not ours)"
        if TP_MSR.enabled:
            TP_MSR.emit(vcpu.id, dir="rdmsr", index=m.index, value=0, result=result)

    # -- the port: a bus device (offset, size, value) called on the vCPU's thread
    def write(self, offset: int, size: int, value: int) -> None:
        # The hot path of every port-transport hypercall (bench/hypercall.py):
        # one unpack for the registers, two bytes of CS, one store for RAX.
        vcpu = current_vcpu()
        fd = vcpu.fd
        view = fd.run_view
        r = _unpack_regs(view, fd.sync_regs_offset)
        if view[fd.sync_cs_l_offset]:
            args = (r[_RDI], r[_RSI], r[_RDX], r[_R10], r[_R8], r[_R9])
            abi = "64"
        else:
            args = (r[_RBX] & MASK32, r[_RCX] & MASK32, r[_RDX] & MASK32,
                    r[_RSI] & MASK32, r[_RDI] & MASK32, r[_RBP] & MASK32)
            abi = "32"
        call = Hypercall(vcpu, value & MASK32, args, abi, view[fd.sync_cs_dpl_offset], self._memory,
                         fd.sync_sregs)
        fd.sync_gprs[_RAX] = self._dispatch(call)
        fd.dirty_regs[0] |= SYNC_REGS

    def read(self, offset: int, size: int) -> int:
        return (1 << (8 * size)) - 1


class KernelTransport:
    name = "kernel"

    def __init__(self, domain: "XenDomain"):
        self.domain = domain
        vm = domain.vm
        self.set_kvm_event_channels(domain.accel_full)
        for v in vm.vcpus:
            v.exit_handlers[consts.KVM_EXIT_XEN] = self._exit
            v.fd.run.kvm_valid_regs = consts.KVM_SYNC_X86_REGS | consts.KVM_SYNC_X86_SREGS

    def set_kvm_event_channels(self, on: bool) -> None:
        """KVM_XEN_HVM_CONFIG, with KVM_XEN_HVM_CONFIG_EVTCHN_SEND while KVM may handle
        2-level events (KVM then answers SCHEDOP_poll itself, testing shared_info's 2-level
        bitmap).  KVM takes a new config at any time (kvm_xen_hvm_config copies it under
        its xen_lock): a guest switching to FIFO turns it off."""
        flags = consts.KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL
        if on:
            flags |= consts.KVM_XEN_HVM_CONFIG_EVTCHN_SEND
        self.domain.vm.fd.xen_hvm_config(flags, HYPERCALL_MSR)

    def _exit(self, vcpu) -> None:
        x = vcpu.fd.xen
        if x.type != consts.KVM_EXIT_XEN_HCALL:
            self.domain.vm.request_exit(exitcodes.GUEST_FAILURE, f"vcpu{vcpu.id}: unknown KVM_EXIT_XEN type {x.type}")
            return
        h = x.u.hcall
        abi = "64" if h.longmode else "32"
        if self.domain.accel.long_mode is None:
            # The first call's mode, until the guest latches a layout (shared_info placement,
            # register_vcpu_info): later calls from a vCPU in another mode must not flip it.
            self.domain.accel.set_long_mode(bool(h.longmode))
        mask = MASK64 if h.longmode else MASK32
        args = tuple(h.params[i] & mask for i in range(6))
        call = Hypercall(vcpu, h.input & MASK32, args, abi, h.cpl, self.domain.vm.memory, vcpu.fd.sync_sregs)
        h.result = self.domain.hypercalls.dispatch(call)


def xen_kvm_flags(kvm) -> int:
    return kvm.check_extension(consts.KVM_CAP_XEN_HVM)


def choose_transport(kvm, requested: str) -> str:
    """auto: kernel when KVM offers INTERCEPT_HCALL, else port."""
    have = bool(xen_kvm_flags(kvm) & consts.KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL)
    if requested == "auto":
        return "kernel" if have else "port"
    if requested == "kernel" and not have:
        raise ValueError("--xen-hypercalls=kernel: this host's KVM has no Xen support "
                         "(KVM_CAP_XEN_HVM lacks INTERCEPT_HCALL); use port, or the nested test host")
    return requested
