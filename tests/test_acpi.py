"""ACPI: the tables vmm/boot/acpi.py writes, the AML encoder, the PM device,
the loaders' RSDP pointers, and kit guests that power off / reset through ACPI."""

from __future__ import annotations

import pytest

from conftest import guest_path
from devices.acpi_pm import AcpiPm
from vmm import exitcodes
from vmm.boot import aml, layout, load_kernel
from vmm.boot.acpi import (ACPI_PM_BASE, ACPI_PM_SIZE, FADT_HW_REDUCED_ACPI, FADT_RESET_REG_SUP,
                           GAS_ACCESS_BYTE, GAS_SYSTEM_IO, IAPC_CMOS_RTC_NOT_PRESENT, IAPC_VGA_NOT_PRESENT,
                           LAPIC_ENABLED, MADT_PCAT_COMPAT, MADT_TYPE_IO_APIC, MADT_TYPE_LOCAL_APIC,
                           RESET_PORT, RESET_VALUE, S5_SLP_TYP, SLEEP_CONTROL_PORT, SLEEP_STATUS_PORT, SLP_EN,
                           TABLE_ALIGN, WAK_STS, Fadt, MadtEntryHeader, MadtFields, MadtIoApic, MadtLocalApic,
                           Rsdp, RsdpV1, SdtHeader, build_dsdt, write_acpi_tables)
from vmm.errors import UserError
from vmm.memory import E820_ACPI, IOAPIC_BASE, LAPIC_BASE, GuestMemory

COM1 = [(0x3F8, 4)]


# ---------------------------------------------------------------- reading tables back
def read_table(mem: GuestMemory, addr: int, signature: bytes) -> tuple[object, bytes]:
    assert addr % TABLE_ALIGN == 0, f"{signature!r} at {addr:#x} is not 16-byte aligned"
    assert layout.ACPI_TABLES <= addr < layout.ACPI_TABLES_END
    hdr = SdtHeader.parse(mem.read(addr, SdtHeader.sizeof()))
    assert hdr.signature == signature
    raw = mem.read(addr, hdr.length)
    assert sum(raw) % 256 == 0, f"{signature!r}: bad checksum"
    assert addr + hdr.length <= layout.ACPI_TABLES_END
    return hdr, raw


def tables(mem: GuestMemory, rsdp_addr: int) -> dict[bytes, tuple[int, bytes]]:
    """signature -> (address, raw table), walking RSDP -> XSDT -> FADT -> DSDT."""
    raw = mem.read(rsdp_addr, Rsdp.sizeof())
    rsdp = Rsdp.parse(raw)            # Const checks "RSD PTR "
    assert rsdp.revision == 2 and rsdp.length == Rsdp.sizeof() == 36
    assert sum(raw[:RsdpV1.sizeof()]) % 256 == 0 and RsdpV1.sizeof() == 20
    assert sum(raw) % 256 == 0
    assert rsdp.rsdt_address == 0
    xsdt_hdr, xsdt = read_table(mem, rsdp.xsdt_address, b"XSDT")
    out = {b"XSDT": (rsdp.xsdt_address, xsdt)}
    for off in range(SdtHeader.sizeof(), xsdt_hdr.length, 8):
        addr = int.from_bytes(xsdt[off:off + 8], "little")
        sig = SdtHeader.parse(mem.read(addr, SdtHeader.sizeof())).signature
        out[sig] = (addr, read_table(mem, addr, sig)[1])
    fadt = Fadt.parse(out[b"FACP"][1])
    out[b"DSDT"] = (fadt.x_dsdt, read_table(mem, fadt.x_dsdt, b"DSDT")[1])
    return out


def madt_entries(raw: bytes) -> list:
    off = SdtHeader.sizeof() + MadtFields.sizeof()
    entries = []
    while off < len(raw):
        e = MadtEntryHeader.parse(raw[off:])
        assert e.length >= 2 and off + e.length <= len(raw)
        sub = {MADT_TYPE_LOCAL_APIC: MadtLocalApic, MADT_TYPE_IO_APIC: MadtIoApic}[e.type]
        entries.append(sub.parse(raw[off:off + e.length]))
        off += e.length
    return entries


# ---------------------------------------------------------------- (a) the tables
@pytest.mark.parametrize("cpus", [1, 2])
def test_tables_signatures_lengths_checksums(cpus):
    mem = GuestMemory(16 << 20)
    rsdp = write_acpi_tables(mem, cpus, serial_ports=COM1)
    assert rsdp == layout.ACPI_TABLES == 0xE0000
    found = tables(mem, rsdp)
    assert sorted(found) == [b"APIC", b"DSDT", b"FACP", b"XSDT"]
    assert len(found[b"FACP"][1]) == Fadt.sizeof() == 276
    assert len(found[b"XSDT"][1]) == 36 + 2 * 8
    # no two tables overlap, all after the RSDP
    spans = sorted((a, a + len(raw)) for a, raw in found.values())
    assert spans[0][0] >= rsdp + Rsdp.sizeof()
    assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:]))


def test_e820_reports_the_table_area_as_acpi():
    mem = GuestMemory(16 << 20)
    plain = mem.e820()
    assert all(t != E820_ACPI for _, _, t in plain)
    rsdp = write_acpi_tables(mem, 2, serial_ports=COM1)
    e820 = mem.e820()
    acpi = [(a, s) for a, s, t in e820 if t == E820_ACPI]
    assert len(acpi) == 1
    start, size = acpi[0]
    assert start == rsdp
    assert all(start <= a and a + len(raw) <= start + size for a, raw in tables(mem, rsdp).values())
    # the rest of the map is unchanged, sorted and without overlaps
    assert [e for e in e820 if e[2] != E820_ACPI] == plain
    assert all(a + s <= b for (a, s, _), (b, _, _) in zip(e820, e820[1:]))


def test_fadt_hw_reduced_with_sleep_and_reset_registers():
    mem = GuestMemory(16 << 20)
    found = tables(mem, write_acpi_tables(mem, 1, serial_ports=COM1))
    fadt = Fadt.parse(found[b"FACP"][1])
    assert fadt.header.revision == 6 and fadt.fadt_minor_version == 3
    assert fadt.flags == FADT_HW_REDUCED_ACPI | FADT_RESET_REG_SUP
    assert fadt.flags & (1 << 20) and fadt.flags & (1 << 10)      # the spec's bit numbers
    assert fadt.iapc_boot_arch == IAPC_VGA_NOT_PRESENT | IAPC_CMOS_RTC_NOT_PRESENT
    assert not fadt.iapc_boot_arch & (1 << 1)                      # no 8042: Linux won't probe it
    assert fadt.sci_int == 0 and fadt.smi_cmd == 0 and fadt.firmware_ctrl == 0 and fadt.x_firmware_ctrl == 0
    assert fadt.pm1a_cnt_blk == 0 and fadt.pm_tmr_blk == 0 and fadt.x_pm1a_cnt_blk.address == 0
    assert fadt.dsdt == 0 and fadt.x_dsdt == found[b"DSDT"][0]
    for gas, port in ((fadt.sleep_control_reg, SLEEP_CONTROL_PORT), (fadt.sleep_status_reg, SLEEP_STATUS_PORT),
                      (fadt.reset_reg, RESET_PORT)):
        assert (gas.space_id, gas.bit_width, gas.bit_offset, gas.access_size, gas.address) == \
            (GAS_SYSTEM_IO, 8, 0, GAS_ACCESS_BYTE, port)
        assert ACPI_PM_BASE <= port < ACPI_PM_BASE + ACPI_PM_SIZE
    assert len({SLEEP_CONTROL_PORT, SLEEP_STATUS_PORT, RESET_PORT}) == 3
    assert fadt.reset_value == RESET_VALUE


@pytest.mark.parametrize("cpus", [1, 2])
@pytest.mark.parametrize("legacy_pic", [True, False])
def test_madt_one_lapic_per_vcpu_and_the_ioapic(cpus, legacy_pic):
    mem = GuestMemory(16 << 20)
    raw = tables(mem, write_acpi_tables(mem, cpus, serial_ports=COM1, legacy_pic=legacy_pic))[b"APIC"][1]
    hdr = SdtHeader.parse(raw)
    assert hdr.revision == 5
    head = MadtFields.parse(raw[SdtHeader.sizeof():])
    assert head.local_apic_address == LAPIC_BASE == 0xFEE00000
    assert head.flags == (MADT_PCAT_COMPAT if legacy_pic else 0)
    entries = madt_entries(raw)
    lapics = [(e.processor_uid, e.apic_id, e.flags) for e in entries if e.type == MADT_TYPE_LOCAL_APIC]
    assert lapics == [(i, i, LAPIC_ENABLED) for i in range(cpus)]
    ioapics = [(e.io_apic_id, e.io_apic_address, e.gsi_base) for e in entries if e.type == MADT_TYPE_IO_APIC]
    assert ioapics == [(cpus, IOAPIC_BASE, 0)] and IOAPIC_BASE == 0xFEC00000
    assert len(entries) == cpus + 1        # no interrupt source overrides
    assert MadtLocalApic.sizeof() == 8 and MadtIoApic.sizeof() == 12


def test_reset_vector_stub_writes_the_reset_register(tmp_path):
    """Linux on HW-reduced ACPI without EFI reboots by jumping to F000:FFF0
    (BOOT_EFI -> BOOT_BIOS): the stub there must do what RESET_REG does."""
    import subprocess
    mem = GuestMemory(16 << 20)
    write_acpi_tables(mem, 1)
    assert layout.RESET_VECTOR == 0xFFFF0
    code = mem.read(layout.RESET_VECTOR, 16)
    stub = tmp_path / "stub.bin"
    stub.write_bytes(code[:code.index(b"\xeb\xfd") + 2])
    asm = subprocess.run(["objdump", "-D", "-b", "binary", "-m", "i8086", str(stub)],
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    insns = [line.split("\t")[-1].split() for line in asm.splitlines() if line.startswith("   ")]
    assert insns == [["mov", f"${RESET_VALUE:#x},%al"], ["mov", f"${RESET_PORT:#x},%dx"], ["out", "%al,(%dx)"],
                     ["cli"], ["hlt"], ["jmp", "0x7"]], asm
    # inside the reserved BIOS area of the e820 map
    assert any(a <= layout.RESET_VECTOR and layout.RESET_VECTOR + 16 <= a + s and t == 2 for a, s, t in mem.e820())


def test_madt_cpu_limit():
    mem = GuestMemory(16 << 20)
    tables(mem, write_acpi_tables(mem, 254))
    with pytest.raises(UserError, match="254"):
        write_acpi_tables(GuestMemory(16 << 20), 255)


def test_dsdt_aml():
    """The DSDT body, byte for byte (checked against `iasl -d` when written):
    Scope(\\_SB_) { Device(COM1) { _HID EISAID("PNP0501"), _UID 1,
    _CRS { IO(Decode16, 0x3F8, 0x3F8, 0, 8), IRQNoFlags(){4} } } }
    Name(\\_S5_, Package() {5, 0, 0, 0})"""
    dsdt = build_dsdt(COM1)
    hdr = SdtHeader.parse(dsdt)
    assert hdr.signature == b"DSDT" and hdr.revision == 2 and hdr.length == len(dsdt) and sum(dsdt) % 256 == 0
    crs = bytes.fromhex("11 10 0a 0d" "47 01 f803 f803 00 08" "22 1000" "79 00")
    com1 = (b"\x08_HID" + bytes.fromhex("0c 41d00501") + b"\x08_UID\x01" + b"\x08_CRS" + crs)
    device = bytes.fromhex("5b82") + bytes([1 + 4 + len(com1)]) + b"COM1" + com1
    scope = b"\x10" + bytes([1 + 5 + len(device)]) + b"\\_SB_" + device
    s5 = b"\x08\\_S5_" + bytes.fromhex("12 07 04 0a05 00 00 00")
    assert dsdt[SdtHeader.sizeof():] == scope + s5
    assert build_dsdt().endswith(s5)               # no serial port: just the empty scope and \_S5_
    assert bytes.fromhex("12 07 04 0a05") in dsdt and S5_SLP_TYP == 5


# ---------------------------------------------------------------- the AML encoder
@pytest.mark.parametrize("payload, encoded", [
    (0, "01"), (62, "3f"),                    # one byte: the count includes itself, up to 63
    (63, "4104"), (0xFFD, "4fff"),            # two bytes: lead nibble + 8 bits, up to 0xfff
    (0xFFE, "810001"), (0xFFFFC, "8fffff"),   # three bytes, up to 0xfffff
    (0xFFFFD, "c1000001")])
def test_pkg_length(payload, encoded):
    assert aml.pkg_length(payload) == bytes.fromhex(encoded)
    # decoding rule of §20.2.4 gives back payload + the PkgLength bytes
    enc = aml.pkg_length(payload)
    n = enc[0] >> 6
    value = enc[0] & 0x3F if n == 0 else (enc[0] & 0xF) | int.from_bytes(enc[1:], "little") << 4
    assert value == payload + len(enc) and len(enc) == n + 1


def test_aml_names_integers_eisaid():
    assert aml.name_string("_HID") == b"_HID"
    assert aml.name_string("\\_SB_") == b"\\_SB_"
    assert aml.name_string("\\_SB_.COM1") == b"\\\x2e_SB_COM1"
    assert aml.name_string("A.B.C") == b"\x2f\x03A___B___C___"
    assert aml.name_string("^PCI0") == b"^PCI0"
    for bad in ("1ABC", "TOOLONG", "a"):
        with pytest.raises(ValueError):
            aml.name_seg(bad)
    assert [aml.integer(v) for v in (0, 1, 2, 0x100, 0x10000, 1 << 32)] == [
        b"\x00", b"\x01", b"\x0a\x02", b"\x0b\x00\x01", b"\x0c\x00\x00\x01\x00", b"\x0e" + (1 << 32).to_bytes(8, "little")]
    assert aml.string("ab") == b"\x0dab\x00"
    assert aml.eisa_id("PNP0501") == bytes.fromhex("0c41d00501")
    assert aml.eisa_id("PNP0A03") == bytes.fromhex("0c41d00a03")
    assert aml.irq(4) == bytes.fromhex("221000") and aml.irq(1, 12) == bytes.fromhex("220210")
    assert aml.package() == b"\x12\x02\x00"
    big = aml.buffer(bytes(100))                      # PkgLength needs two bytes
    assert big[:5] == bytes.fromhex("11 4806 0a64") and len(big) == 1 + 2 + 2 + 100


# ---------------------------------------------------------------- the PM device
def test_acpi_pm_device():
    events = []
    dev = AcpiPm(lambda: events.append("poweroff"), lambda: events.append("reset"))
    ctl, sts, rst = (p - ACPI_PM_BASE for p in (SLEEP_CONTROL_PORT, SLEEP_STATUS_PORT, RESET_PORT))
    assert dev.read(sts, 1) == 0 and dev.read(ctl, 1) == 0          # WAK_STS never set
    dev.write(sts, 1, WAK_STS)                                       # Linux clears WAK_STS first
    dev.write(ctl, 1, S5_SLP_TYP << 2)                               # no SLP_EN
    dev.write(ctl, 1, 1 << 2 | SLP_EN)                               # S1: not announced, ignored
    dev.write(rst, 1, RESET_VALUE ^ 0xFF)
    assert events == []
    dev.write(ctl, 1, S5_SLP_TYP << 2 | SLP_EN)
    assert events == ["poweroff"]
    dev.write(rst, 1, RESET_VALUE)
    assert events == ["poweroff", "reset"]
    dev.write(ctl, 4, (RESET_VALUE << 16) | (S5_SLP_TYP << 2 | SLP_EN))   # a dword write hits each byte
    assert events == ["poweroff", "reset", "poweroff", "reset"]


# ---------------------------------------------------------------- loaders: the RSDP pointer
def test_pvh_start_info_rsdp_and_memmap():
    from vmm.boot.pvh import HvmMemmapEntry, HvmStartInfo
    from vmm.vm import Vm, VmConfig
    vm = Vm(VmConfig(memory=64 << 20))
    try:
        rsdp = write_acpi_tables(vm.memory, 1, serial_ports=COM1)
        info = load_kernel(vm.memory, vm.boot_vcpu, guest_path("pvh_entry64"), "", rsdp_addr=rsdp)
        si = HvmStartInfo.parse(vm.memory.read(info.boot_params, HvmStartInfo.sizeof()))
        assert si.rsdp_paddr == rsdp == 0xE0000
        memmap = [HvmMemmapEntry.parse(vm.memory.read(si.memmap_paddr + 24 * i, 24))
                  for i in range(si.memmap_entries)]
        assert [(e.addr, e.size, e.type) for e in memmap] == vm.memory.e820()
        assert any(e.type == E820_ACPI and e.addr == rsdp for e in memmap)
    finally:
        vm.close()


def test_pvh_without_acpi_has_no_rsdp():
    from vmm.boot.pvh import HvmStartInfo
    from vmm.vm import Vm, VmConfig
    vm = Vm(VmConfig(memory=64 << 20))
    try:
        info = load_kernel(vm.memory, vm.boot_vcpu, guest_path("pvh_entry64"), "")
        si = HvmStartInfo.parse(vm.memory.read(info.boot_params, HvmStartInfo.sizeof()))
        assert si.rsdp_paddr == 0
    finally:
        vm.close()


def test_bzimage_zero_page_acpi_rsdp_addr():
    from test_boot_bzimage import debian_bzimage
    from vmm.boot.bzimage import BP_ACPI_RSDP_ADDR, BP_E820_ENTRIES, BP_E820_TABLE, E820Entry
    from vmm.vm import Vm, VmConfig
    vm = Vm(VmConfig(memory=512 << 20))
    try:
        rsdp = write_acpi_tables(vm.memory, 2, serial_ports=COM1)
        load_kernel(vm.memory, vm.boot_vcpu, debian_bzimage(), "console=ttyS0", rsdp_addr=rsdp)
        zp = vm.memory.read(layout.ZERO_PAGE, 4096)
        assert int.from_bytes(zp[BP_ACPI_RSDP_ADDR:BP_ACPI_RSDP_ADDR + 8], "little") == rsdp
        table = [E820Entry.parse(zp[BP_E820_TABLE + 20 * i:]) for i in range(zp[BP_E820_ENTRIES])]
        assert [(e.addr, e.size, e.type) for e in table] == vm.memory.e820()
        assert any(e.type == E820_ACPI for e in table)
    finally:
        vm.close()


# ---------------------------------------------------------------- (b)/(c) kit guests via `vmm run`
@pytest.mark.parametrize("cpus, irqchip", [(1, "kernel"), (2, "kernel"), (2, "split")])
def test_guest_walks_tables_and_powers_off(vmm, guest, cpus, irqchip):
    r = vmm("run", "--kernel", guest("acpi_poweroff"), "--cpus", str(cpus), "--irqchip", irqchip,
            "--cmdline", f"cpus={cpus}", "--trace", "acpi.*", "--trace", "vm.exit", "--trace", "debug_exit.*",
            "--timeout", "60")
    out = r.out.splitlines()
    assert "PASS" in out and "FAIL" not in r.out, f"stdout:\n{r.out}\nstderr:\n{r.err}"
    assert r.code == exitcodes.GUEST_POWEROFF == 0, r
    assert f"acpi: MADT {cpus} CPUs ok" in out
    assert sum(l.startswith("acpi: MADT LAPIC") for l in out) == cpus
    assert f"acpi: MADT IOAPIC id {cpus} addr 0xfec00000 gsi_base 0" in out
    assert f"acpi: DSDT \\_S5_ SLP_TYPa={S5_SLP_TYP}" in out
    # the exit came from the ACPI sleep register, not the debug-exit port
    assert "acpi.sleep value=0x34 slp_typ=5 slp_en=1 action=poweroff" in r.err
    assert "vm.exit code=0 reason=guest powered off (ACPI S5)" in r.err
    assert "debug_exit.write" not in r.err


def test_guest_resets_through_acpi_reset_register(vmm, guest):
    r = vmm("run", "--kernel", guest("acpi_reset"), "--cpus", "2", "--cmdline", "cpus=2",
            "--trace", "acpi.*", "--timeout", "60")
    assert "PASS" in r.out.splitlines() and "FAIL" not in r.out, r
    assert r.code == exitcodes.GUEST_RESET
    assert f"acpi.reset value={RESET_VALUE:#x} action=reset" in r.err
    assert "guest reset (ACPI reset register) (exit 80)" in r.err


def test_no_acpi_leaves_rsdp_paddr_zero(vmm, guest):
    r = vmm("run", "--kernel", guest("acpi_poweroff"), "--no-acpi", "--cmdline", "noacpi", "--timeout", "60")
    assert "acpi: rsdp_paddr=0 (no ACPI)" in r.out
    assert "PASS" in r.out.splitlines() and r.code == 0, r


def test_guest_catches_a_wrong_cpu_count(vmm, guest):
    """The guest really compares: told to expect 2 CPUs on a 1-vCPU VM, it fails."""
    r = vmm("run", "--kernel", guest("acpi_poweroff"), "--cmdline", "cpus=2", "--timeout", "60")
    assert r.code == 1 and "FAIL: MADT: 1 CPUs and 1 I/O APICs, expected 2 and 1" in r.out, r
