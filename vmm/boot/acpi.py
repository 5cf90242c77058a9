"""ACPI tables for the guest: RSDP -> XSDT -> FADT (-> DSDT, FACS), MADT.

Reference: ACPI Specification 6.x (section numbers as in 6.3-6.5).  The machine
is a **full ACPI PC platform** (not hardware-reduced, §4.1): Linux on a
hardware-reduced platform drops the 8259s (arch/x86/kernel/acpi/boot.c
acpi_reduced_hw_init: legacy_pic = &null_legacy_pic), so it could neither run
"noapic" on the XT-PIC nor declare an SCI, and a Xen HVM guest needs both (the
SCI becomes a PIRQ with APIC virtualization; "xen_no_vector_callback noapic"
puts the platform device's INTx on the XT-PIC).  What the guest gets:

* the fixed hardware (§4.8) of devices/acpi_pm.py, as QEMU's PIIX4 lays it out at
  0x600: the PM1a event block (PM1_STS/PM1_EN), the PM1a control block
  (PM1_CNT: SCI_EN, SLP_TYP/SLP_EN), the PM timer (3.579545 MHz, 24 bits), no GPE
  block (GPE0_BLK_LEN 0: "not supported", §5.2.9).  SMI_CMD is 0: no SMM, the
  platform is always in ACPI mode and SCI_EN reads 1 (§4.8.2.1; ACPICA's
  acpi_hw_get_mode answers ACPI mode when SMI_CMD is 0, so Linux never writes an
  enable command);
* the SCI on ISA IRQ 9 (SCI_INT), level-triggered and active high: the MADT's
  interrupt source override ISA 9 -> GSI 9 flags 0xD, as PIIX4/QEMU.  With the
  I/O APIC Linux registers it through acpi_register_gsi (a Xen PIRQ with
  XENFEAT_hvm_pirqs, "xen-pirq ... acpi" in /proc/interrupts), with "noapic" on
  IRQ 9 of the 8259s;
* the FACS (§5.2.10, 64 bytes, 64-byte aligned, X_FIRMWARE_CTRL): required on a
  non-HW-reduced platform.  ACPICA would carry on without one (tbutils.c
  acpi_tb_initialize_facs: "If there is no FACS, just continue. There was
  already an error msg"), but with an error in the log; no waking vector (we
  never sleep to S1-S4), the global lock unused;
* poweroff: OSPM takes SLP_TYPa for S5 from the DSDT's ``\\_S5_`` package
  (§7.4.2) and writes ``SLP_TYP << 10 | SLP_EN`` to PM1a_CNT (Linux:
  acpica/hwsleep.c acpi_hw_legacy_sleep);
* reset: RESET_REG (§4.8.3.6) in the same device, FADT flag RESET_REG_SUP; OSPM
  writes RESET_VALUE to it.  On a full ACPI platform Linux's default reboot
  type is BOOT_ACPI (arch/x86/kernel/reboot.c: EFI reboot is preferred only on
  HW-reduced ones), then the keyboard controller (our i8042 resets too); a
  10-byte stub at the BIOS reset vector F000:FFF0 (``reset_vector_stub``) writes
  RESET_REG as well, for a guest that jumps there;
* CPUs and the I/O APIC: the MADT (§5.2.12), one Processor Local APIC entry
  per vCPU (APIC id = vCPU index), the I/O APIC with id = number of vCPUs at
  0xFEC00000, GSI base 0, and PCAT_COMPAT (the dual 8259s).  One interrupt
  source override, the SCI's (above); none for IRQ 0: KVM's in-kernel irqchip
  routes ISA IRQ n to I/O APIC pin n (IRQ0 included), which is what the
  absence of an override means (§5.2.12.5), and our own PIT (split irqchip,
  devices/pit.py) raises IRQ 0 on GSI 0 to agree;
* ISA devices in the DSDT (§5.2.11.1) under ``\\_SB_``: the serial ports as
  PNP0501 with their I/O range and IRQ (vmm/boot/aml.py encodes the AML).
* the PCI host bridge in the DSDT, when the machine has a PCI bus:
  ``\\_SB_.PCI0`` (PNP0A03, conventional PCI, segment 0, bus 0).  Linux finds
  no PCI bus on an ACPI machine without one: with ACPI IRQ routing it skips
  its legacy bus-0 scan (arch/x86/pci/legacy.c pci_subsys_init) and takes the
  root buses from PNP0A03/PNP0A08 devices (drivers/acpi/pci_root.c).  Its
  ``_CRS`` (§6.4.3.5) gives bus 0-0, consumes the config
  mechanism #1 ports 0xCF8-0xCFF and forwards the I/O windows 0x0000-0xCF7 and
  0xD00-0xFFFF and the 32-bit PCI hole (``PCI_MMIO_BASE`` up to the I/O APIC)
  where devices/pci.py places the BARs.  No MCFG and no ``_CBA``: there is no
  ECAM, so Linux uses configuration mechanism #1 (its type-1 probe of 0xCF8).
  ``_PRT`` (§6.2.13) is a method answering the interrupt model OSPM announced
  with ``\\_PIC`` (§5.8.1; ``pic_model``), as QEMU's PIIX DSDT: in APIC mode
  every slot's INTA-INTD in the "hardwired GSI" form (Source 0, SourceIndex =
  the GSI) from ``PciBus.routing_table()``: 16 + (slot + pin - 1) % 4,
  level-triggered active-low by definition; in PIC mode the same pins on the
  PCI interrupt link devices ``\\_SB_.LNKA``-``LNKD`` (PNP0C0F,
  ``pci_link_devices``; link n = what APIC mode sends to GSI 16 + n), whose
  _PRS offers ISA IRQs 5, 10, 11 (level, active-low, shared) and whose
  _SRS/_DIS/_CRS/_STA program and read the router's PIIX-style route
  registers (devices/pci.py ``PciIrqRouter``, ports 0x610-0x614) through a
  SystemIO OperationRegion.  Linux evaluates \\_PIC before enabling any PCI
  interrupt: 1 with the I/O APIC, 0 with "noapic" (drivers/acpi/bus.c
  acpi_bus_init_irq; acpi_parse_madt_ioapic_entries returns -ENODEV under
  "noapic", so acpi_irq_model stays ACPI_IRQ_MODEL_PIC), then in PIC mode picks
  a link IRQ, calls _SRS and sets that IRQ level-triggered in the ELCR
  (acpi_register_gsi_pic).  The router starts in the APIC model (\\PICF = 1):
  guests that never run AML (our kit guests, no-ACPI boots) use GSIs 16-19.

Placement: the RSDP at vmm/boot/layout.py ACPI_TABLES (0xE0000, in the BIOS
area Linux also scans for it), then the FACS (64-byte aligned), DSDT, MADT,
FADT, XSDT, each 16-byte aligned; the whole area is reported to the guest as E820 type 3 (ACPI)
through ``GuestMemory.mark_acpi_tables``.  The loaders pass the RSDP address
on: PVH ``hvm_start_info.rsdp_paddr``, bzImage
``boot_params.acpi_rsdp_addr``.
"""

from __future__ import annotations

from typing import Sequence

from vmm.boot import aml, layout
from vmm.boot.cstruct import Bytes, Const, Default, Int8ul, Int16ul, Int32ul, Int64ul, Struct
from vmm.errors import UserError
from vmm.memory import IOAPIC_BASE, LAPIC_BASE, PCI_MMIO_BASE, GuestMemory

# ---------------------------------------------------------------- the PM device
# devices/acpi_pm.py: the fixed-hardware register blocks (§4.8.1), laid out as
# QEMU's PIIX4 PM function places them at its base 0x600, plus the reset register.
ACPI_PM_BASE = 0x600
ACPI_PM_SIZE = 16
PM1A_EVT_BLK = ACPI_PM_BASE + 0          # PM1_STS (16 bits), then PM1_EN (16 bits)
PM1_EVT_LEN = 4
PM1A_CNT_BLK = ACPI_PM_BASE + 4          # PM1_CNT (16 bits)
PM1_CNT_LEN = 2
PM_TMR_BLK = ACPI_PM_BASE + 8            # PM_TMR (32-bit reads, 24 bits of count)
PM_TMR_LEN = 4
RESET_PORT = ACPI_PM_BASE + 12           # write RESET_VALUE: system reset (RESET_REG)
RESET_VALUE = 0x01
PM_TIMER_HZ = 3579545                    # §4.8.3.3: 3.579545 MHz
PM_TIMER_BITS = 24                       # no TMR_VAL_EXT: TMR_STS when bit 23 toggles
SCI_IRQ = 9                              # ISA IRQ 9 = GSI 9, level, active high (as PIIX4/QEMU)

# §4.8.3.1 PM1 Status / Enable registers (same bit positions)
TMR_STS = 1 << 0
BM_STS = 1 << 4
GBL_STS = 1 << 5
PWRBTN_STS = 1 << 8
SLPBTN_STS = 1 << 9
RTC_STS = 1 << 10
WAK_STS = 1 << 15
TMR_EN, GBL_EN, PWRBTN_EN, SLPBTN_EN, RTC_EN = TMR_STS, GBL_STS, PWRBTN_STS, SLPBTN_STS, RTC_STS
# §4.8.3.2.1 PM1 Control register
SCI_EN = 1 << 0
BM_RLD = 1 << 1
GBL_RLS = 1 << 2
SLP_TYP_SHIFT = 10
SLP_TYP_MASK = 0x7 << SLP_TYP_SHIFT
SLP_EN = 1 << 13
# The SLP_TYP value our \_S5_ package announces (ours to choose; the device checks it).
S5_SLP_TYP = 5

# ---------------------------------------------------------------- the PCI interrupt router
# devices/pci.py PciIrqRouter: what \_PIC and the link devices LNKA-LNKD of the
# DSDT read and write through a SystemIO OperationRegion (PIIX's PIRQRC[A:D]
# registers, moved from the ISA bridge's config space to ports of our own).
PCI_IRQ_ROUTER_BASE = 0x610
PCI_IRQ_ROUTER_SIZE = 5
PIC_MODE_PORT = PCI_IRQ_ROUTER_BASE + 0  # \_PIC's argument: 0 PIC, 1 APIC (reads back)
PIRQ_PORT = PCI_IRQ_ROUTER_BASE + 1      # + link 0..3: bit 7 disabled, bits 3:0 the ISA IRQ
PIRQ_DISABLED = 0x80
PCI_LINK_IRQS = (5, 10, 11)              # each link's _PRS (QEMU's PIIX choice)
PCI_LINKS = ("LNKA", "LNKB", "LNKC", "LNKD")
PCI_LINK_GSI_BASE = 16                   # link n carries what APIC mode routes to GSI 16 + n

# ---------------------------------------------------------------- the PCI host bridge (\_SB_.PCI0)
# What the root bridge decodes (devices/pci.py, vmm/memory.py): bus 0 only, the
# config mechanism #1 ports, all other I/O ports, the 32-bit MMIO hole.
PCI_CONFIG_PORTS = (0xCF8, 8)                       # consumed by the bridge itself
PCI_IO_WINDOWS = ((0x0000, 0x0CF7), (0x0D00, 0xFFFF))
PCI_MMIO_WINDOW = (PCI_MMIO_BASE, IOAPIC_BASE - 1)  # 0xC0000000-0xFEBFFFFF
PCI_SLOTS = 32
PCI_PINS = 4                                        # _PRT Pin: 0 = INTA .. 3 = INTD

# ---------------------------------------------------------------- identification
OEM_ID = b"PYVMM "               # 6 bytes
OEM_TABLE_ID = b"PYVMMTBL"       # 8 bytes
OEM_REVISION = 1
CREATOR_ID = b"PVMM"             # 4 bytes
CREATOR_REVISION = 1

RSDP_REVISION = 2                # ACPI 2.0+ RSDP with XSDT (Linux wants it)
XSDT_REVISION = 1
FADT_REVISION = 6                # §5.2.9: FADT major version 6 ...
FADT_MINOR_REVISION = 3          # ... minor 3 (ACPI 6.3)
DSDT_REVISION = 2                # >= 2: AML integers are 64-bit (§5.2.11.1)
MADT_REVISION = 5                # ACPI 6.3
TABLE_ALIGN = 16

# ---------------------------------------------------------------- layouts
# §5.2.5.3 Root System Description Pointer (RSDP) Structure.  The first 20
# bytes are the ACPI 1.0 structure that `checksum` covers.
RsdpV1 = Struct(
    "signature" / Const(b"RSD PTR "),
    "checksum" / Int8ul,
    "oem_id" / Bytes(6),
    "revision" / Int8ul,
    "rsdt_address" / Int32ul,
)
Rsdp = Struct(
    *RsdpV1.subcons,
    "length" / Int32ul,
    "xsdt_address" / Int64ul,
    "extended_checksum" / Int8ul,     # of the whole structure
    "reserved" / Default(Bytes(3), bytes(3)),
)

# §5.2.6 System Description Table Header
SdtHeader = Struct(
    "signature" / Bytes(4),
    "length" / Int32ul,
    "revision" / Int8ul,
    "checksum" / Int8ul,
    "oem_id" / Bytes(6),
    "oem_table_id" / Bytes(8),
    "oem_revision" / Int32ul,
    "creator_id" / Bytes(4),
    "creator_revision" / Int32ul,
)

# §5.2.3.2 Generic Address Structure (GAS)
Gas = Struct(
    "space_id" / Int8ul,
    "bit_width" / Int8ul,
    "bit_offset" / Int8ul,
    "access_size" / Int8ul,
    "address" / Int64ul,
)
GAS_SYSTEM_MEMORY = 0
GAS_SYSTEM_IO = 1
GAS_ACCESS_BYTE = 1
GAS_ACCESS_WORD = 2
GAS_ACCESS_DWORD = 3
NO_GAS = dict(space_id=0, bit_width=0, bit_offset=0, access_size=0, address=0)

_U8, _U16, _U32, _U64 = (Default(t, 0) for t in (Int8ul, Int16ul, Int32ul, Int64ul))
_GAS = Default(Gas, NO_GAS)

# §5.2.9 Fixed ACPI Description Table (FADT), revision 6: 276 bytes.  Fields a
# hardware-reduced platform leaves zero default to zero.
Fadt = Struct(
    "header" / SdtHeader,
    "firmware_ctrl" / _U32,          # FACS, 32-bit (0: X_FIRMWARE_CTRL is used)
    "dsdt" / _U32,                   # must be 0 when X_DSDT is used
    "reserved0" / _U8,
    "preferred_pm_profile" / _U8,
    "sci_int" / _U16,                # the SCI's ISA IRQ (8259 mode) / GSI (APIC mode)
    "smi_cmd" / _U32,
    "acpi_enable" / _U8,
    "acpi_disable" / _U8,
    "s4bios_req" / _U8,
    "pstate_cnt" / _U8,
    "pm1a_evt_blk" / _U32,
    "pm1b_evt_blk" / _U32,
    "pm1a_cnt_blk" / _U32,
    "pm1b_cnt_blk" / _U32,
    "pm2_cnt_blk" / _U32,
    "pm_tmr_blk" / _U32,
    "gpe0_blk" / _U32,
    "gpe1_blk" / _U32,
    "pm1_evt_len" / _U8,
    "pm1_cnt_len" / _U8,
    "pm2_cnt_len" / _U8,
    "pm_tmr_len" / _U8,
    "gpe0_blk_len" / _U8,
    "gpe1_blk_len" / _U8,
    "gpe1_base" / _U8,
    "cst_cnt" / _U8,
    "p_lvl2_lat" / _U16,
    "p_lvl3_lat" / _U16,
    "flush_size" / _U16,
    "flush_stride" / _U16,
    "duty_offset" / _U8,
    "duty_width" / _U8,
    "day_alrm" / _U8,
    "mon_alrm" / _U8,
    "century" / _U8,
    "iapc_boot_arch" / _U16,         # §5.2.9.3
    "reserved1" / _U8,
    "flags" / _U32,                  # §5.2.9 Table "Fixed ACPI Description Table Fixed Feature Flags"
    "reset_reg" / _GAS,
    "reset_value" / _U8,
    "arm_boot_arch" / _U16,
    "fadt_minor_version" / _U8,
    "x_firmware_ctrl" / _U64,
    "x_dsdt" / _U64,
    "x_pm1a_evt_blk" / _GAS,
    "x_pm1b_evt_blk" / _GAS,
    "x_pm1a_cnt_blk" / _GAS,
    "x_pm1b_cnt_blk" / _GAS,
    "x_pm2_cnt_blk" / _GAS,
    "x_pm_tmr_blk" / _GAS,
    "x_gpe0_blk" / _GAS,
    "x_gpe1_blk" / _GAS,
    "sleep_control_reg" / _GAS,
    "sleep_status_reg" / _GAS,
    "hypervisor_vendor_identity" / _U64,
)
# FADT Fixed Feature Flags
FADT_WBINVD = 1 << 0                 # WBINVD works (a VM's cache is coherent)
FADT_PROC_C1 = 1 << 2                # C1 (HLT) on every processor
FADT_PWR_BUTTON = 1 << 4             # set: power button is a control method (ours is the fixed one: clear)
FADT_SLP_BUTTON = 1 << 5             # set: no fixed-feature sleep button
FADT_TMR_VAL_EXT = 1 << 8            # set: 32-bit PM timer (ours is 24-bit: clear)
FADT_RESET_REG_SUP = 1 << 10
FADT_HW_REDUCED_ACPI = 1 << 20       # not set: this is a full (legacy-capable) ACPI platform
FADT_FLAGS = FADT_WBINVD | FADT_PROC_C1 | FADT_SLP_BUTTON | FADT_RESET_REG_SUP
# P_LVL2_LAT > 100 and P_LVL3_LAT > 1000: C2 and C3 not supported (§5.2.9)
P_LVL2_LAT_NONE = 0x0FFF
P_LVL3_LAT_NONE = 0x03E9
# §5.2.10 Firmware ACPI Control Structure (FACS): no checksum, 64-byte aligned.
Facs = Struct(
    "signature" / Const(b"FACS"),
    "length" / Const(64, Int32ul),
    "hardware_signature" / _U32,
    "firmware_waking_vector" / _U32,
    "global_lock" / _U32,
    "flags" / _U32,
    "x_firmware_waking_vector" / _U64,
    "version" / Default(Int8ul, 2),
    "reserved" / Default(Bytes(3), bytes(3)),
    "ospm_flags" / _U32,
    "reserved2" / Default(Bytes(24), bytes(24)),
)
FACS_ALIGN = 64
# §5.2.9.3 IA-PC Boot Architecture Flags.  Not set: LEGACY_DEVICES, 8042 (our
# i8042 is reset-only: Linux then skips probing it).
IAPC_VGA_NOT_PRESENT = 1 << 2
IAPC_CMOS_RTC_NOT_PRESENT = 1 << 5

# §5.2.12 Multiple APIC Description Table (MADT): header, two fields, entries.
MadtFields = Struct(
    "local_apic_address" / Int32ul,
    "flags" / Int32ul,
)
MADT_PCAT_COMPAT = 1 << 0            # dual 8259s present (KVM's, or ours with split: devices/pic.py)
MadtEntryHeader = Struct("type" / Int8ul, "length" / Int8ul)
MADT_TYPE_LOCAL_APIC = 0
MADT_TYPE_IO_APIC = 1
MADT_TYPE_INTERRUPT_OVERRIDE = 2
# §5.2.12.2 Processor Local APIC Structure
MadtLocalApic = Struct(
    "type" / Const(MADT_TYPE_LOCAL_APIC, Int8ul),
    "length" / Const(8, Int8ul),
    "processor_uid" / Int8ul,
    "apic_id" / Int8ul,
    "flags" / Int32ul,
)
LAPIC_ENABLED = 1 << 0
# §5.2.12.3 I/O APIC Structure
MadtIoApic = Struct(
    "type" / Const(MADT_TYPE_IO_APIC, Int8ul),
    "length" / Const(12, Int8ul),
    "io_apic_id" / Int8ul,
    "reserved" / Default(Int8ul, 0),
    "io_apic_address" / Int32ul,
    "gsi_base" / Int32ul,
)
# §5.2.12.5 Interrupt Source Override Structure
MadtIntOverride = Struct(
    "type" / Const(MADT_TYPE_INTERRUPT_OVERRIDE, Int8ul),
    "length" / Const(10, Int8ul),
    "bus" / Default(Int8ul, 0),          # 0: ISA
    "source" / Int8ul,                    # the ISA IRQ
    "gsi" / Int32ul,
    "flags" / Int16ul,                    # MPS INTI flags
)
MPS_INTI_POLARITY_HIGH = 0b01            # bits 1:0 polarity: 01 active high, 11 active low
MPS_INTI_TRIGGER_LEVEL = 0b11 << 2       # bits 3:2 trigger mode: 01 edge, 11 level


# ---------------------------------------------------------------- builders
def checksum(data: bytes) -> int:
    """The byte that makes ``data`` (with it) sum to 0 mod 256 (§5.2.6 Checksum)."""
    return -sum(data) & 0xFF


def _header(signature: bytes, revision: int, length: int, csum: int) -> dict:
    return dict(signature=signature, length=length, revision=revision, checksum=csum, oem_id=OEM_ID,
                oem_table_id=OEM_TABLE_ID, oem_revision=OEM_REVISION, creator_id=CREATOR_ID,
                creator_revision=CREATOR_REVISION)


def sdt(signature: bytes, revision: int, body: bytes) -> bytes:
    """A system description table: header (§5.2.6) + body, checksum filled in."""
    length = SdtHeader.sizeof() + len(body)
    raw = SdtHeader.build(_header(signature, revision, length, 0)) + body
    return SdtHeader.build(_header(signature, revision, length, checksum(raw))) + body


def build_rsdp(xsdt_addr: int) -> bytes:
    fields = dict(checksum=0, oem_id=OEM_ID, revision=RSDP_REVISION, rsdt_address=0,
                  length=Rsdp.sizeof(), xsdt_address=xsdt_addr, extended_checksum=0)
    fields["checksum"] = checksum(Rsdp.build(fields)[:RsdpV1.sizeof()])
    fields["extended_checksum"] = checksum(Rsdp.build(fields))
    return Rsdp.build(fields)


def build_xsdt(entries: Sequence[int]) -> bytes:
    """§5.2.8 Extended System Description Table: 64-bit table addresses."""
    return sdt(b"XSDT", XSDT_REVISION, b"".join(Int64ul.build(a) for a in entries))


def _io_reg(port: int, width: int = 8, access: int = GAS_ACCESS_BYTE) -> dict:
    return dict(space_id=GAS_SYSTEM_IO, bit_width=width, bit_offset=0, access_size=access, address=port)


def build_facs() -> bytes:
    """§5.2.10: no waking vector (we never sleep to S1-S4), no global lock owner, version 2."""
    return Facs.build({})


def build_fadt(dsdt_addr: int, facs_addr: int, rtc_century: int = 0) -> bytes:
    """A full (not hardware-reduced) FADT: the SCI on ISA IRQ 9, the PM1a event and
    control blocks, the PM timer, no GPE block (GPE0_BLK_LEN 0: "not supported", §5.2.9),
    SMI_CMD 0 (no SMM: the platform is always in ACPI mode, §4.8.2.1; ACPICA's
    acpi_hw_get_mode answers ACPI mode when SMI_CMD is 0), the FACS, RESET_REG.

    ``rtc_century``: the CMOS register holding the century when the machine has a
    CMOS RTC (0x32), 0 for none (then IAPC_BOOT_ARCH says "CMOS RTC not present").
    Each block is given twice, as the 32-bit field and as the X_ GAS, with the same
    address and width: ACPICA compares them (tbfadt.c) and warns when they differ."""
    fields = dict(
        header=_header(b"FACP", FADT_REVISION, Fadt.sizeof(), 0),
        x_firmware_ctrl=facs_addr,       # FIRMWARE_CTRL stays 0 when X_FIRMWARE_CTRL is used
        sci_int=SCI_IRQ,
        smi_cmd=0,
        pm1a_evt_blk=PM1A_EVT_BLK, pm1_evt_len=PM1_EVT_LEN,
        pm1a_cnt_blk=PM1A_CNT_BLK, pm1_cnt_len=PM1_CNT_LEN,
        pm_tmr_blk=PM_TMR_BLK, pm_tmr_len=PM_TMR_LEN,
        p_lvl2_lat=P_LVL2_LAT_NONE, p_lvl3_lat=P_LVL3_LAT_NONE,
        iapc_boot_arch=IAPC_VGA_NOT_PRESENT | (0 if rtc_century else IAPC_CMOS_RTC_NOT_PRESENT),
        century=rtc_century,
        flags=FADT_FLAGS,
        reset_reg=_io_reg(RESET_PORT),
        reset_value=RESET_VALUE,
        fadt_minor_version=FADT_MINOR_REVISION,
        x_dsdt=dsdt_addr,
        x_pm1a_evt_blk=_io_reg(PM1A_EVT_BLK, 8 * PM1_EVT_LEN, GAS_ACCESS_WORD),
        x_pm1a_cnt_blk=_io_reg(PM1A_CNT_BLK, 8 * PM1_CNT_LEN, GAS_ACCESS_WORD),
        x_pm_tmr_blk=_io_reg(PM_TMR_BLK, 8 * PM_TMR_LEN, GAS_ACCESS_DWORD),
    )
    fields["header"]["checksum"] = checksum(Fadt.build(fields))
    return Fadt.build(fields)


def _prt_entries(routing: Sequence[tuple[int, int, int]], pic_mode: bool) -> list[bytes]:
    entries = []
    for slot, pin, gsi in routing:
        if not 0 <= slot < PCI_SLOTS or not 1 <= pin <= PCI_PINS:
            raise ValueError(f"PCI routing entry slot {slot} pin {pin} out of range")
        if not PCI_LINK_GSI_BASE <= gsi < PCI_LINK_GSI_BASE + len(PCI_LINKS):
            raise ValueError(f"PCI routing entry slot {slot} pin {pin}: GSI {gsi} is not one of the links' "
                             f"{PCI_LINK_GSI_BASE}..{PCI_LINK_GSI_BASE + len(PCI_LINKS) - 1}")
        # §6.2.13 Table "Mapping Fields": Address (device in the high word, 0xFFFF: any
        # function), Pin, Source, Source Index.  APIC mode: Source 0 (hardwired), Source
        # Index the GSI.  PIC mode: Source the link device, Source Index 0.
        address = (slot << 16) | 0xFFFF
        if pic_mode:
            link = PCI_LINKS[gsi - PCI_LINK_GSI_BASE]
            entries.append(aml.package(address, pin - 1, aml.ref(f"\\_SB_.{link}"), 0))
        else:
            entries.append(aml.package(address, pin - 1, 0, gsi))
    return entries


def pci_host_bridge(routing: Sequence[tuple[int, int, int]]) -> bytes:
    r"""``Device (PCI0)``: the root bridge of PCI segment 0, bus 0, with the
    INTx routing ``routing`` = (slot, pin 1..4 = INTA..INTD, GSI) triples
    (``PciBus.routing_table()``; the GSI 16 + n names link n, LNKA + n).

    ASL equivalent::

        Device (PCI0) {
            Name (_HID, EisaId ("PNP0A03"))     // PCI (not PCIe: no ECAM)
            Name (_UID, 0)
            Name (_SEG, 0)
            Name (_BBN, 0)
            Name (_CRS, ResourceTemplate () {
                WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, 0, 0, 0, 1)
                IO (Decode16, 0x0CF8, 0x0CF8, 0x01, 0x08)
                WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,
                        0, 0x0000, 0x0CF7, 0, 0x0CF8)
                WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,
                        0, 0x0D00, 0xFFFF, 0, 0xF300)
                DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,
                             0, 0xC0000000, 0xFEBFFFFF, 0, 0x3EC00000)
            })
            Name (PRTA, Package () {                      // APIC mode: hardwired GSIs
                Package () { 0x0000FFFF, 0, Zero, 16 },   // slot 0 INTA -> GSI 16
                ...
                Package () { 0x001FFFFF, 3, Zero, 18 },   // slot 31 INTD -> GSI 18
            })
            Name (PRTP, Package () {                      // PIC mode: the link devices
                Package () { 0x0000FFFF, 0, \_SB_.LNKA, 0 },
                ...
                Package () { 0x001FFFFF, 3, \_SB_.LNKC, 0 },
            })
            Method (_PRT, 0) {
                If (\PICF) { Return (PRTA) }
                Return (PRTP)
            }
        }

    No ``_ADR``: a device object has a _HID or an _ADR, "but should not
    contain both" (§6.1), and for a root bridge the _HID is what OSPM matches.
    ``\PICF`` is the router's mode register (``pic_model``): _PRT answers the
    model OSPM announced with \_PIC.
    """
    apic = _prt_entries(routing, pic_mode=False)
    pic = _prt_entries(routing, pic_mode=True)
    config_port, config_len = PCI_CONFIG_PORTS
    crs = aml.resource_template(
        aml.word_bus_number(0, 0),
        aml.io_port(config_port, config_port, 1, config_len),
        *(aml.word_io(lo, hi) for lo, hi in PCI_IO_WINDOWS),
        aml.dword_memory(*PCI_MMIO_WINDOW))
    return aml.device("PCI0",
                      aml.name("_HID", aml.eisa_id("PNP0A03")),
                      aml.name("_UID", 0),
                      aml.name("_SEG", 0),
                      aml.name("_BBN", 0),
                      aml.name("_CRS", crs),
                      aml.name("PRTA", aml.package(*apic)),
                      aml.name("PRTP", aml.package(*pic)),
                      aml.method("_PRT", 0,
                                 aml.if_(aml.ref("\\PICF"), aml.return_(aml.ref("PRTA"))),
                                 aml.return_(aml.ref("PRTP"))))


def pic_model() -> bytes:
    r"""The interrupt model: ``\_PIC`` (§5.8.1) and the router's registers.

    ASL equivalent::

        OperationRegion (\PIRQ, SystemIO, 0x610, 5)
        Field (\PIRQ, ByteAcc, NoLock, Preserve) {
            PICF, 8,                     // 0 PIC, 1 APIC: what \_PIC was told
            PRQA, 8, PRQB, 8, PRQC, 8, PRQD, 8     // link A-D: bit 7 disabled, 3:0 ISA IRQ
        }
        Method (\_PIC, 1) { Store (Arg0, PICF) }

    Linux evaluates \_PIC once, before any PCI interrupt is enabled, with 0 when it
    runs without I/O APIC ("noapic": acpi_irq_model stays ACPI_IRQ_MODEL_PIC) and 1
    otherwise (drivers/acpi/bus.c acpi_bus_init_irq)."""
    return (aml.operation_region_io("\\PIRQ", PCI_IRQ_ROUTER_BASE, PCI_IRQ_ROUTER_SIZE)
            + aml.field("\\PIRQ", ("PICF", 8), *((f"PRQ{link[-1]}", 8) for link in PCI_LINKS))
            + aml.method("\\_PIC", 1, aml.store(aml.arg(0), aml.ref("\\PICF"))))


def pci_link_devices() -> list[bytes]:
    r"""``\_SB_.LNKA``-``LNKD`` (PNP0C0F, §6.2.13 "PCI Interrupt Link Devices"), and the
    helper ``\_SB_.IQCR`` building a link's current resource, as QEMU's PIIX DSDT::

        Method (IQCR, 1, Serialized) {
            Name (PRR0, ResourceTemplate () { Interrupt (ResourceConsumer, Level, ActiveLow, Shared) {0} })
            CreateDWordField (PRR0, 5, PRRI)
            If (LLess (Arg0, 0x80)) { Store (Arg0, PRRI) }
            Return (PRR0)
        }
        Device (LNKA) {
            Name (_HID, EisaId ("PNP0C0F"))
            Name (_UID, 1)
            Name (_PRS, ResourceTemplate () { Interrupt (ResourceConsumer, Level, ActiveLow, Shared) {5, 10, 11} })
            Method (_STA, 0) { If (And (PRQA, 0x80)) { Return (0x09) } Return (0x0B) }
            Method (_DIS, 0) { Or (PRQA, 0x80, PRQA) }
            Method (_CRS, 0) { Return (IQCR (PRQA)) }
            Method (_SRS, 1) { CreateDWordField (Arg0, 5, PRRI) Store (PRRI, PRQA) }
        }

    _STA: 0x0B present, enabled, functioning; 0x09 present and functioning but
    disabled (routing off).  Interrupt's DWord IRQ number is at byte 5 of the
    descriptor (§6.4.3.6), which is where _SRS finds the one OSPM picked."""
    iqcr = aml.method(
        "IQCR", 1,
        aml.name("PRR0", aml.resource_template(aml.extended_interrupt(0))),
        aml.create_dword_field(aml.ref("PRR0"), 5, "PRRI"),
        aml.if_(aml.lless(aml.arg(0), PIRQ_DISABLED), aml.store(aml.arg(0), aml.ref("PRRI"))),
        aml.return_(aml.ref("PRR0")),
        serialized=True)
    links = [iqcr]
    for i, link in enumerate(PCI_LINKS):
        reg = aml.ref(f"\\PRQ{link[-1]}")
        links.append(aml.device(
            link,
            aml.name("_HID", aml.eisa_id("PNP0C0F")),
            aml.name("_UID", i + 1),
            aml.name("_PRS", aml.resource_template(aml.extended_interrupt(*PCI_LINK_IRQS))),
            aml.method("_STA", 0,
                       aml.if_(aml.and_(reg, PIRQ_DISABLED), aml.return_(0x09)),
                       aml.return_(0x0B)),
            aml.method("_DIS", 0, aml.or_(reg, PIRQ_DISABLED, reg)),
            aml.method("_CRS", 0, aml.return_(aml.ref("\\_SB_.IQCR") + reg)),
            aml.method("_SRS", 1,
                       aml.create_dword_field(aml.arg(0), 5, "PRRI"),
                       aml.store(aml.ref("PRRI"), reg))))
    return links


def build_dsdt(serial_ports: Sequence[tuple[int, int]] = (),
               pci_routing: Sequence[tuple[int, int, int]] | None = None,
               rtc_port: int | None = None, pvpanic_port: int | None = None) -> bytes:
    """The DSDT: ``\\_SB_.COMn`` for each (port, irq) serial port, and unless
    ``pci_routing`` is None the interrupt model (``pic_model``: ``\\_PIC``), the PCI
    host bridge ``\\_SB_.PCI0`` (see ``pci_host_bridge``) and its interrupt link
    devices (``pci_link_devices``); then ``\\_S5_``.

    ASL equivalent (one port, no PCI)::

        Scope (\\_SB_) {
            Device (COM1) {
                Name (_HID, EisaId ("PNP0501"))
                Name (_UID, 1)
                Name (_CRS, ResourceTemplate () {
                    IO (Decode16, 0x3F8, 0x3F8, 0x00, 0x08)
                    IRQNoFlags () {4}
                })
            }
        }
        Name (\\_S5_, Package () {5, 0, 0, 0})   // SLP_TYPa, SLP_TYPb, reserved, reserved
    """
    devices = [aml.device(f"COM{i + 1}",
                          aml.name("_HID", aml.eisa_id("PNP0501")),
                          aml.name("_UID", i + 1),
                          aml.name("_CRS", aml.resource_template(aml.io_port(port, port, 0, 8), aml.irq(irq))))
               for i, (port, irq) in enumerate(serial_ports)]
    if rtc_port is not None:      # Device (RTC_) { _HID PNP0B00, IO (rtc_port, 2) }: no IRQ wired
        devices.append(aml.device("RTC_", aml.name("_HID", aml.eisa_id("PNP0B00")),
                                  aml.name("_CRS", aml.resource_template(aml.io_port(rtc_port, rtc_port, 1, 2)))))
    if pvpanic_port is not None:  # QEMU's pvpanic-isa: _HID "QEMU0001", IO (port, 1) (Linux pvpanic-mmio)
        devices.append(aml.device("PEVT", aml.name("_HID", "QEMU0001"),
                                  aml.name("_CRS", aml.resource_template(
                                      aml.io_port(pvpanic_port, pvpanic_port, 1, 1)))))
    prologue = b""
    if pci_routing is not None:
        prologue = pic_model()
        devices.append(pci_host_bridge(pci_routing))
        devices.extend(pci_link_devices())
    body = prologue + aml.scope("\\_SB_", *devices) + aml.name("\\_S5_", aml.package(S5_SLP_TYP, 0, 0, 0))
    return sdt(b"DSDT", DSDT_REVISION, body)


def build_madt(nr_cpus: int, legacy_pic: bool = True) -> bytes:
    """One Processor Local APIC per vCPU, the I/O APIC, and one interrupt source
    override: the SCI, ISA IRQ 9 -> GSI 9, level-triggered, active high (as PIIX4 and
    QEMU declare it; without it an ISA IRQ is edge/high, §5.2.12.5)."""
    if not 1 <= nr_cpus <= 254:
        raise UserError(f"ACPI tables describe 1..254 vCPUs (the I/O APIC takes APIC id {nr_cpus}); "
                        f"got {nr_cpus} (use --no-acpi)")
    entries = [MadtLocalApic.build(dict(processor_uid=i, apic_id=i, flags=LAPIC_ENABLED)) for i in range(nr_cpus)]
    entries.append(MadtIoApic.build(dict(io_apic_id=nr_cpus, io_apic_address=IOAPIC_BASE, gsi_base=0)))
    entries.append(MadtIntOverride.build(dict(source=SCI_IRQ, gsi=SCI_IRQ,
                                              flags=MPS_INTI_POLARITY_HIGH | MPS_INTI_TRIGGER_LEVEL)))
    head = MadtFields.build(dict(local_apic_address=LAPIC_BASE, flags=MADT_PCAT_COMPAT if legacy_pic else 0))
    return sdt(b"APIC", MADT_REVISION, head + b"".join(entries))


def reset_vector_stub() -> bytes:
    """16-bit code for the reset vector (layout.RESET_VECTOR): what a guest
    that "jumps to the BIOS" to reboot (Linux's BOOT_BIOS) runs."""
    return (bytes([0xB0, RESET_VALUE])                          # mov al, RESET_VALUE
            + bytes([0xBA]) + RESET_PORT.to_bytes(2, "little")   # mov dx, RESET_PORT
            + bytes([0xEE])                                      # out dx, al
            + bytes([0xFA, 0xF4])                                # cli; hlt
            + bytes([0xEB, 0xFD]))                               # jmp back to the hlt


def _align(addr: int, align: int = TABLE_ALIGN) -> int:
    return (addr + align - 1) & ~(align - 1)


def write_acpi_tables(memory: GuestMemory, nr_cpus: int, *, serial_ports: Sequence[tuple[int, int]] = (),
                      pci_routing: Sequence[tuple[int, int, int]] | None = None,
                      legacy_pic: bool = True, rtc: tuple[int, int] | None = None,
                      pvpanic_port: int | None = None, base: int = layout.ACPI_TABLES) -> int:
    """Write the RSDP at ``base``, then FACS (64-byte aligned), DSDT, MADT, FADT and
    XSDT after it (each 16-byte aligned, each placed before the table that points at it), mark the
    area as ACPI in the e820 map, put the reset-vector stub in place, and
    return the RSDP's address.

    ``serial_ports``: (I/O base, ISA IRQ) of each 16550 to declare in the DSDT;
    ``pci_routing``: the PCI bus's (slot, pin, GSI) INTx routing
    (``PciBus.routing_table()``) to declare the host bridge with, None for a
    machine without PCI;
    ``legacy_pic``: whether the irqchip has the dual 8259 (MADT PCAT_COMPAT);
    ``rtc``: (port, century register) of the CMOS RTC, None for a machine without;
    ``pvpanic_port``: the pvpanic device's port (QEMU0001), None for none."""
    if base % TABLE_ALIGN:
        raise ValueError(f"ACPI tables base {base:#x} is not {TABLE_ALIGN}-byte aligned")
    tables: list[tuple[int, bytes]] = []
    cursor = _align(base + Rsdp.sizeof())

    def place(data: bytes) -> int:
        nonlocal cursor
        addr = cursor
        tables.append((addr, data))
        cursor = _align(addr + len(data))
        return addr

    cursor = _align(cursor, FACS_ALIGN)
    facs_addr = place(build_facs())
    dsdt_addr = place(build_dsdt(serial_ports, pci_routing, rtc[0] if rtc else None, pvpanic_port))
    madt_addr = place(build_madt(nr_cpus, legacy_pic))
    fadt_addr = place(build_fadt(dsdt_addr, facs_addr, rtc[1] if rtc else 0))
    xsdt_addr = place(build_xsdt([fadt_addr, madt_addr]))
    tables.insert(0, (base, build_rsdp(xsdt_addr)))
    end = max(addr + len(data) for addr, data in tables)
    if end > layout.ACPI_TABLES_END:
        raise UserError(f"ACPI tables ({end - base} bytes at {base:#x}) do not fit below {layout.ACPI_TABLES_END:#x}")
    memory.fill(base, end - base)
    for addr, data in tables:
        memory.write(addr, data)
    memory.mark_acpi_tables(base, end - base)
    memory.write(layout.RESET_VECTOR, reset_vector_stub())
    return base
