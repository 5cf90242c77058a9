"""Per-vCPU CPUID: what KVM supports, with the APIC ID filled in.

Higher layers (xen/) may add hypervisor leaves through ``extra_leaves``.
"""

from __future__ import annotations

from kvm_bindings import Kvm, VcpuFd, ffi


def configure_cpuid(kvm: Kvm, vcpu: VcpuFd, apic_id: int,
                    extra_leaves: dict[tuple[int, int], tuple[int, int, int, int]] | None = None) -> None:
    supported = kvm.supported_cpuid()
    entries = [supported.entries[i] for i in range(supported.nent)]
    extra = dict(extra_leaves or {})
    # Replace leaves the caller overrides (e.g. the hypervisor range for Xen).
    entries = [e for e in entries if (e.function, e.index) not in extra]
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
    for j, ((fn, idx), (a, b, c, dd)) in enumerate(sorted(extra.items())):
        d = cpuid.entries[len(entries) + j]
        d.function, d.index, d.flags = fn, idx, 0
        d.eax, d.ebx, d.ecx, d.edx = a, b, c, dd
    vcpu.set_cpuid2(cpuid)
