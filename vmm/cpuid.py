"""Per-vCPU CPUID: what KVM supports, with the APIC ID filled in.

Higher layers (xen/) add hypervisor leaves through ``Vm.add_cpuid_leaves``; the Vm
composes them and calls this once per vCPU (``Vm.configure_cpuid``).
"""

from __future__ import annotations

from kvm_bindings import Kvm, VcpuFd, consts, ffi


def configure_cpuid(kvm: Kvm, vcpu: VcpuFd, apic_id: int,
                    extra_leaves: dict[tuple[int, int], tuple[int, int, int, int]] | None = None) -> None:
    supported = kvm.supported_cpuid()
    entries = [supported.entries[i] for i in range(supported.nent)]
    extra = dict(extra_leaves or {})
    # The caller's leaves replace whole functions (e.g. Xen's hypervisor range
    # replaces KVM's signature leaves 0x40000000/0x40000001).
    replaced = {fn for (fn, _idx) in extra}
    entries = [e for e in entries if e.function not in replaced]
    n = len(entries) + len(extra)
    cpuid = ffi.new("struct kvm_cpuid2 *", {"nent": n, "entries": n})
    cpuid.nent = n
    for i, e in enumerate(entries):
        d = cpuid.entries[i]
        ffi.memmove(ffi.addressof(d), ffi.addressof(e), ffi.sizeof(d))
        if e.function == 1:
            d.ebx = (d.ebx & 0x00FFFFFF) | ((apic_id & 0xFF) << 24)
        elif e.function in (0xB, 0x1F):
            d.edx = apic_id
    indexed = {fn for (fn, idx) in extra if idx != 0}
    for j, ((fn, idx), (a, b, c, dd)) in enumerate(sorted(extra.items())):
        d = cpuid.entries[len(entries) + j]
        # leaves with sub-leaves must say so, or KVM ignores ECX for them
        d.function, d.index = fn, idx
        d.flags = consts.KVM_CPUID_FLAG_SIGNIFCANT_INDEX if fn in indexed else 0
        d.eax, d.ebx, d.ecx, d.edx = a, b, c, dd
    vcpu.set_cpuid2(cpuid)
