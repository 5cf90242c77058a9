"""ACPI tables for the guest: RSDP -> XSDT -> FADT (-> DSDT), MADT.

Reference: ACPI Specification 6.x (section numbers as in 6.3-6.5).  The machine
is **hardware-reduced ACPI** (§4.1, FADT flag HW_REDUCED_ACPI): no PM1 event
/control blocks, no PM timer, no GPEs, no SCI, no FACS.  What the guest gets:

* poweroff: the FADT's SLEEP_CONTROL_REG / SLEEP_STATUS_REG (§4.8.3.7 "Sleep
  Control and Status Registers", FADT §5.2.9) point at a small port device
  (devices/acpi_pm.py).  OSPM takes SLP_TYPa for S5 from the DSDT's ``\\_S5_``
  package (§7.4.2 "\\_Sx (System States)") and writes
  ``SLP_TYP << 2 | SLP_EN`` there (Linux: acpica/hwxfsleep.c,
  acpi_hw_extended_sleep);
* reset: RESET_REG (§4.8.3.6 "Reset Register") in the same device, FADT flag
  RESET_REG_SUP; OSPM writes RESET_VALUE to it.  Linux tries it first only
  with reboot=a: on a HW-reduced platform it otherwise picks EFI reboot
  (arch/x86/kernel/reboot.c reboot_init, efi_reboot_required), which without
  EFI falls back to a real-mode jump to the BIOS reset vector F000:FFF0; a
  10-byte stub there (``reset_vector_stub``) writes RESET_REG as well;
* CPUs and the I/O APIC: the MADT (§5.2.12), one Processor Local APIC entry
  per vCPU (APIC id = vCPU index), the I/O APIC with id = number of vCPUs at
  0xFEC00000, GSI base 0.  No interrupt source overrides: KVM's in-kernel
  irqchip routes ISA IRQ n to I/O APIC pin n (IRQ0 included), which is what
  the absence of an override means (§5.2.12.5), and our own PIT (split
  irqchip, devices/pit.py) raises IRQ 0 on GSI 0 to agree;
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
  ``_PRT`` (§6.2.13) lists every slot's INTA-INTD in the "hardwired GSI" form
  (Source 0, SourceIndex = the GSI) from ``PciBus.routing_table()``:
  16 + (slot + pin - 1) % 4, level-triggered active-low by definition.

Placement: the RSDP at vmm/boot/layout.py ACPI_TABLES (0xE0000, in the BIOS
area Linux also scans for it), then DSDT, MADT, FADT, XSDT, each 16-byte
aligned; the whole area is reported to the guest as E820 type 3 (ACPI)
through ``GuestMemory.mark_acpi_tables``.  The loaders pass the RSDP address
on: PVH ``hvm_start_info.rsdp_paddr``, bzImage
``boot_params.acpi_rsdp_addr``.
"""

from __future__ import annotations

from typing import Sequence

from construct import Bytes, Const, Default, Int8ul, Int16ul, Int32ul, Int64ul, Struct

from vmm.boot import aml, layout
from vmm.errors import UserError
from vmm.memory import IOAPIC_BASE, LAPIC_BASE, PCI_MMIO_BASE, GuestMemory

# ---------------------------------------------------------------- the PM device
# Port block of devices/acpi_pm.py, one byte register each (the FADT's GAS
# entries below describe them as 8-bit System I/O registers).
ACPI_PM_BASE = 0x620
ACPI_PM_SIZE = 4
SLEEP_CONTROL_PORT = ACPI_PM_BASE + 0    # write: SLP_TYP << 2 | SLP_EN
SLEEP_STATUS_PORT = ACPI_PM_BASE + 1     # read: WAK_STS (never set: we don't wake)
RESET_PORT = ACPI_PM_BASE + 2            # write RESET_VALUE: system reset
RESET_VALUE = 0x01

# §4.8.3.7 Sleep Control Register / Sleep Status Register bits
SLP_TYP_SHIFT = 2
SLP_TYP_MASK = 0x7 << SLP_TYP_SHIFT
SLP_EN = 1 << 5
WAK_STS = 1 << 7
# The SLP_TYP value our \_S5_ package announces (ours to choose; the device checks it).
S5_SLP_TYP = 5

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
NO_GAS = dict(space_id=0, bit_width=0, bit_offset=0, access_size=0, address=0)

_U8, _U16, _U32, _U64 = (Default(t, 0) for t in (Int8ul, Int16ul, Int32ul, Int64ul))
_GAS = Default(Gas, NO_GAS)

# §5.2.9 Fixed ACPI Description Table (FADT), revision 6: 276 bytes.  Fields a
# hardware-reduced platform leaves zero default to zero.
Fadt = Struct(
    "header" / SdtHeader,
    "firmware_ctrl" / _U32,          # FACS (none: allowed for HW-reduced)
    "dsdt" / _U32,                   # must be 0 when X_DSDT is used
    "reserved0" / _U8,
    "preferred_pm_profile" / _U8,
    "sci_int" / _U16,                # no SCI on HW-reduced
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
FADT_RESET_REG_SUP = 1 << 10
FADT_HW_REDUCED_ACPI = 1 << 20
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


def _io_reg(port: int) -> dict:
    return dict(space_id=GAS_SYSTEM_IO, bit_width=8, bit_offset=0, access_size=GAS_ACCESS_BYTE, address=port)


def build_fadt(dsdt_addr: int, rtc_century: int = 0) -> bytes:
    """``rtc_century``: the CMOS register holding the century when the machine has a
    CMOS RTC (0x32), 0 for none (then IAPC_BOOT_ARCH says "CMOS RTC not present")."""
    fields = dict(
        header=_header(b"FACP", FADT_REVISION, Fadt.sizeof(), 0),
        iapc_boot_arch=IAPC_VGA_NOT_PRESENT | (0 if rtc_century else IAPC_CMOS_RTC_NOT_PRESENT),
        century=rtc_century,
        flags=FADT_HW_REDUCED_ACPI | FADT_RESET_REG_SUP,
        reset_reg=_io_reg(RESET_PORT),
        reset_value=RESET_VALUE,
        fadt_minor_version=FADT_MINOR_REVISION,
        x_dsdt=dsdt_addr,
        sleep_control_reg=_io_reg(SLEEP_CONTROL_PORT),
        sleep_status_reg=_io_reg(SLEEP_STATUS_PORT),
    )
    fields["header"]["checksum"] = checksum(Fadt.build(fields))
    return Fadt.build(fields)


def pci_host_bridge(routing: Sequence[tuple[int, int, int]]) -> bytes:
    """``Device (PCI0)``: the root bridge of PCI segment 0, bus 0, with the
    INTx routing ``routing`` = (slot, pin 1..4 = INTA..INTD, GSI) triples
    (``PciBus.routing_table()``).

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
            Name (_PRT, Package () {
                Package () { 0x0000FFFF, 0, Zero, 16 },   // slot 0 INTA -> GSI 16
                ...
                Package () { 0x001FFFFF, 3, Zero, 18 },   // slot 31 INTD -> GSI 18
            })
        }

    No ``_ADR``: a device object has a _HID or an _ADR, "but should not
    contain both" (§6.1), and for a root bridge the _HID is what OSPM matches.
    """
    entries = []
    for slot, pin, gsi in routing:
        if not 0 <= slot < PCI_SLOTS or not 1 <= pin <= PCI_PINS:
            raise ValueError(f"PCI routing entry slot {slot} pin {pin} out of range")
        # §6.2.13 Table "Mapping Fields": Address (device in the high word, 0xFFFF: any
        # function), Pin, Source (0: hardwired, no link device), Source Index (the GSI).
        entries.append(aml.package((slot << 16) | 0xFFFF, pin - 1, 0, gsi))
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
                      aml.name("_PRT", aml.package(*entries)))


def build_dsdt(serial_ports: Sequence[tuple[int, int]] = (),
               pci_routing: Sequence[tuple[int, int, int]] | None = None,
               rtc_port: int | None = None) -> bytes:
    """The DSDT: ``\\_SB_.COMn`` for each (port, irq) serial port, the PCI host
    bridge ``\\_SB_.PCI0`` unless ``pci_routing`` is None (see
    ``pci_host_bridge``), and ``\\_S5_``.

    ASL equivalent (one port)::

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
    if pci_routing is not None:
        devices.append(pci_host_bridge(pci_routing))
    body = aml.scope("\\_SB_", *devices) + aml.name("\\_S5_", aml.package(S5_SLP_TYP, 0, 0, 0))
    return sdt(b"DSDT", DSDT_REVISION, body)


def build_madt(nr_cpus: int, legacy_pic: bool = True) -> bytes:
    if not 1 <= nr_cpus <= 254:
        raise UserError(f"ACPI tables describe 1..254 vCPUs (the I/O APIC takes APIC id {nr_cpus}); "
                        f"got {nr_cpus} (use --no-acpi)")
    entries = [MadtLocalApic.build(dict(processor_uid=i, apic_id=i, flags=LAPIC_ENABLED)) for i in range(nr_cpus)]
    entries.append(MadtIoApic.build(dict(io_apic_id=nr_cpus, io_apic_address=IOAPIC_BASE, gsi_base=0)))
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


def _align(addr: int) -> int:
    return (addr + TABLE_ALIGN - 1) & ~(TABLE_ALIGN - 1)


def write_acpi_tables(memory: GuestMemory, nr_cpus: int, *, serial_ports: Sequence[tuple[int, int]] = (),
                      pci_routing: Sequence[tuple[int, int, int]] | None = None,
                      legacy_pic: bool = True, rtc: tuple[int, int] | None = None,
                      base: int = layout.ACPI_TABLES) -> int:
    """Write the RSDP at ``base``, then DSDT, MADT, FADT and XSDT after it (each
    16-byte aligned, each placed before the table that points at it), mark the
    area as ACPI in the e820 map, put the reset-vector stub in place, and
    return the RSDP's address.

    ``serial_ports``: (I/O base, ISA IRQ) of each 16550 to declare in the DSDT;
    ``pci_routing``: the PCI bus's (slot, pin, GSI) INTx routing
    (``PciBus.routing_table()``) to declare the host bridge with, None for a
    machine without PCI;
    ``legacy_pic``: whether the irqchip has the dual 8259 (MADT PCAT_COMPAT);
    ``rtc``: (port, century register) of the CMOS RTC, None for a machine without."""
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

    dsdt_addr = place(build_dsdt(serial_ports, pci_routing, rtc[0] if rtc else None))
    madt_addr = place(build_madt(nr_cpus, legacy_pic))
    fadt_addr = place(build_fadt(dsdt_addr, rtc[1] if rtc else 0))
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
