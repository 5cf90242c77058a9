"""public/hvm/hvm_op.h and public/hvm/params.h: HYPERVISOR_hvm_op(cmd, arg)
sub-ops, their argument structs, and the HVM_PARAM_* parameter space."""

from __future__ import annotations

from enum import IntEnum

from ._layout import XenStruct, array, c_names, domid_t, exports, reserved, u8, u16, u32, u64


class HVMOP(IntEnum):
    """HVMOP_* (hvm/hvm_op.h).  2-4 exist only for interface < 0x00040900 and
    12-13 are tools-only; the ioreq-server/dirty-vram ops moved to dm_op."""
    set_param = 0                   # xen_hvm_param
    get_param = 1                   # xen_hvm_param
    set_pci_intx_level = 2
    set_isa_irq_level = 3
    set_pci_link_route = 4
    flush_tlbs = 5                  # arg must be NULL
    pagetable_dying = 9             # xen_hvm_pagetable_dying
    get_time = 10                   # xen_hvm_get_time
    xentrace = 11
    set_mem_access = 12
    get_mem_access = 13
    get_mem_type = 15
    set_evtchn_upcall_vector = 23   # xen_hvm_evtchn_upcall_vector (x86 only)
    guest_request_vm_event = 24
    altp2m = 25


# hvm/hvm_op.h: struct xen_hvm_param (16 bytes on both ABIs).
xen_hvm_param = XenStruct(
    "xen_hvm_param", "hvm/hvm_op.h",
    "domid" / domid_t,                  # IN
    "pad" / reserved(u16),
    "index" / u32,                      # IN: HVM_PARAM_*
    "value" / u64,                      # IN/OUT
)

# hvm/hvm_op.h: struct xen_hvm_pagetable_dying.
xen_hvm_pagetable_dying = XenStruct(
    "xen_hvm_pagetable_dying", "hvm/hvm_op.h",
    "domid" / domid_t,
    "pad" / reserved(array(u16, 3)),    # align next field on 8-byte boundary
    "gpa" / u64,                        # guest physical address of the toplevel pagetable
)

# hvm/hvm_op.h: struct xen_hvm_get_time {uint64_t now;}
xen_hvm_get_time = XenStruct("xen_hvm_get_time", "hvm/hvm_op.h", "now" / u64)

# hvm/hvm_op.h: struct xen_hvm_evtchn_upcall_vector {uint32_t vcpu; uint8_t vector;}
# (sizeof 8: 3 bytes of trailing padding).
xen_hvm_evtchn_upcall_vector = XenStruct(
    "xen_hvm_evtchn_upcall_vector", "hvm/hvm_op.h",
    "vcpu" / u32,
    "vector" / u8,
)


class HVM_PARAM(IntEnum):
    """HVM_PARAM_* (hvm/params.h).  The "deprecated, meaning undefined" ones
    (PAE_ENABLED, DM_DOMAIN, MEMORY_EVENT_*, NESTEDHVM, BUFIOREQ_EVTCHN) are now
    defined for __XEN__/__XEN_TOOLS__ only."""
    CALLBACK_IRQ = 0                # see HVM_PARAM_CALLBACK_TYPE
    STORE_PFN = 1                   # not used by Xen: for HVM xenbus
    STORE_EVTCHN = 2
    PAE_ENABLED = 4                 # deprecated
    IOREQ_PFN = 5
    BUFIOREQ_PFN = 6
    VIRIDIAN = 9                    # x86
    TIMER_MODE = 10                 # HVMPTM_*
    HPET_ENABLED = 11
    IDENT_PT = 12
    DM_DOMAIN = 13                  # deprecated
    ACPI_S_STATE = 14
    VM86_TSS = 15
    VPT_ALIGN = 16
    CONSOLE_PFN = 17
    CONSOLE_EVTCHN = 18
    ACPI_IOPORTS_LOCATION = 19
    MEMORY_EVENT_CR0 = 20           # deprecated
    MEMORY_EVENT_CR3 = 21           # deprecated
    MEMORY_EVENT_CR4 = 22           # deprecated
    MEMORY_EVENT_INT3 = 23          # deprecated
    NESTEDHVM = 24                  # deprecated
    MEMORY_EVENT_SINGLE_STEP = 25   # deprecated
    BUFIOREQ_EVTCHN = 26            # deprecated
    PAGING_RING_PFN = 27
    MONITOR_RING_PFN = 28
    SHARING_RING_PFN = 29
    MEMORY_EVENT_MSR = 30           # deprecated
    TRIPLE_FAULT_REASON = 31        # SHUTDOWN_* action in case of a triple fault
    IOREQ_SERVER_PFN = 32
    NR_IOREQ_SERVER_PAGES = 33
    VM_GENERATION_ID_ADDR = 34
    ALTP2M = 35
    X87_FIP_WIDTH = 36
    VM86_TSS_SIZED = 37
    MCA_CAP = 38


HVM_NR_PARAMS = 39  # hvm/params.h


class HVM_PARAM_CALLBACK_TYPE(IntEnum):
    """HVM_PARAM_CALLBACK_TYPE_* (hvm/params.h): val[63:56] of
    HVM_PARAM_CALLBACK_IRQ; val == 0 disables CPU0 event-channel notifications."""
    GSI = 0         # val[55:0] is a GSI (GSI 0 unusable: aliases val == 0)
    PCI_INTX = 1    # Domain = val[47:32], Bus = val[31:16], DevFn = val[15:8], IntX = val[1:0]
    VECTOR = 2      # x86: val[7:0] is a vector (needs XENFEAT_hvm_callback_vector)


# hvm/params.h: on Arm the value 2 is HVM_PARAM_CALLBACK_TYPE_PPI instead of VECTOR.
HVM_PARAM_CALLBACK_TYPE_PPI_ARM = 2

# hvm/params.h: the HVM_PARAM_CALLBACK_IRQ value layout.
HVM_PARAM_CALLBACK_IRQ_TYPE_MASK = 0xFF00000000000000
HVM_PARAM_CALLBACK_IRQ_TYPE_SHIFT = 56
HVM_PARAM_CALLBACK_GSI_MASK = (1 << 56) - 1                 # val[55:0]
HVM_PARAM_CALLBACK_VECTOR_MASK = 0xFF                       # val[7:0]
HVM_PARAM_CALLBACK_INTX_DOMAIN = (32, 0xFFFF)               # (shift, mask): val[47:32]
HVM_PARAM_CALLBACK_INTX_BUS = (16, 0xFFFF)                  # val[31:16]
HVM_PARAM_CALLBACK_INTX_DEVFN = (8, 0xFF)                   # val[15:8]
HVM_PARAM_CALLBACK_INTX_PIN = (0, 0x3)                      # val[1:0]
assert HVM_PARAM_CALLBACK_IRQ_TYPE_MASK == 0xFF << HVM_PARAM_CALLBACK_IRQ_TYPE_SHIFT


def callback_irq_type(val: int) -> int:
    """val[63:56] of HVM_PARAM_CALLBACK_IRQ (hvm/params.h)."""
    return (val & HVM_PARAM_CALLBACK_IRQ_TYPE_MASK) >> HVM_PARAM_CALLBACK_IRQ_TYPE_SHIFT


def callback_irq_gsi(val: int) -> int:
    """val[55:0] of a GSI HVM_PARAM_CALLBACK_IRQ value (hvm/params.h)."""
    return val & HVM_PARAM_CALLBACK_GSI_MASK


def callback_irq_vector(val: int) -> int:
    """val[7:0] of a VECTOR HVM_PARAM_CALLBACK_IRQ value (hvm/params.h)."""
    return val & HVM_PARAM_CALLBACK_VECTOR_MASK


def callback_irq_pci_intx(val: int) -> tuple[int, int, int, int]:
    """(domain, bus, devfn, intx) of a PCI_INTX HVM_PARAM_CALLBACK_IRQ value."""
    return tuple((val >> s) & m for s, m in (HVM_PARAM_CALLBACK_INTX_DOMAIN, HVM_PARAM_CALLBACK_INTX_BUS,
                                             HVM_PARAM_CALLBACK_INTX_DEVFN, HVM_PARAM_CALLBACK_INTX_PIN))


def callback_irq_value(type_: int, payload: int) -> int:
    """Compose an HVM_PARAM_CALLBACK_IRQ value, e.g. (VECTOR, 0xF3)."""
    return (type_ << HVM_PARAM_CALLBACK_IRQ_TYPE_SHIFT) | (payload & HVM_PARAM_CALLBACK_GSI_MASK)


class HVMPTM(IntEnum):
    """HVM_PARAM_TIMER_MODE values (hvm/params.h)."""
    delay_for_missed_ticks = 0
    no_delay_for_missed_ticks = 1
    no_missed_ticks_pending = 2
    one_missed_tick_pending = 3


globals().update(c_names(HVMOP, "HVMOP_"))
globals().update(c_names(HVM_PARAM, "HVM_PARAM_"))
globals().update(c_names(HVM_PARAM_CALLBACK_TYPE, "HVM_PARAM_CALLBACK_TYPE_"))
globals().update(c_names(HVMPTM, "HVMPTM_"))

__all__ = exports(globals())
