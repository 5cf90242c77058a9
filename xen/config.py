"""What a Xen HVM domain is asked to be: plain values, no machinery.

Its own module so that a spec can hold one (vmm/machine.py MachineSpec, `vmm run`'s
arguments) without importing the domain (xen/domain.py and all it composes: ~20 ms of
every `vmm run` on the host, ~25x that in the nested test host) where there is no Xen.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class XenConfig:
    """The Xen domain `vmm run --xen` asks for (its --xen-* options)."""
    version: tuple[int, int] = (4, 17)
    hypercalls: str = "auto"            # auto | kernel | port
    kvm_accel: bool = True              # kernel transport: let KVM deliver events and answer poll (xen/kvm_accel.py)
    nr_pirqs: int = 256                 # PIRQs of the domain (Xen: nr_static_irqs + extra_guest_irqs)
    # Offer FIFO event channels (Xen does; Linux then prefers them).  Off: EVTCHNOP_init_control
    # is -ENOSYS (as QEMU), the guest stays 2-level, which KVM's acceleration delivers in-kernel.
    # None (auto): offered unless KVM delivers events (accel_full): KVM's in-kernel delivery
    # knows only 2-level, so there a FIFO guest would take every timer, IPI and PIRQ event
    # through the VMM -- a Linux boot in the nested host ran ~4x slower.  Exits avoided first.
    fifo: bool | None = None
    # CPUID base+4 XEN_HVM_CPUID_APIC_ACCESS_VIRT | X2APIC_VIRT: "the hardware virtualizes the
    # (x2)APIC", so Linux uses native MSIs instead of PIRQs (arch/x86/pci/xen.c xen_hvm_msi_init)
    apic_virt: bool = False
