"""PVH loader: entry state of ELF32 and ELF64 kernels, checked at the guest's first exit.

guest-images/entry/pvh_entry.S writes %ebx to port 0x600 as its first
instruction after one mov, so at that exit every register still holds what the
loader set (except %eax/%edx).  We drive the vCPU by hand, without threads.
"""

from __future__ import annotations

import struct

import pytest

from conftest import guest_path
from kvm_bindings import consts
from vmm.boot import load_kernel
from vmm.boot.pvh import HvmMemmapEntry, HvmModlistEntry, HvmStartInfo, XEN_HVM_START_MAGIC_VALUE
from vmm.vm import Vm, VmConfig


def first_exit(vm):
    vcpu = vm.vcpus[0].fd
    assert vcpu.run_once() == 0
    return vcpu


@pytest.fixture
def vm():
    v = Vm(VmConfig(memory=64 << 20))
    # Dirty all of low RAM so a loader that forgets to zero BSS is caught.
    v.memory.fill(0x100000, 32 << 20, 0xAA)
    yield v
    v.close()


@pytest.mark.parametrize("bits", [32, 64])
def test_pvh_entry_state(vm, bits, tmp_path):
    path = guest_path(f"pvh_entry{bits}")
    with open(path, "rb") as f:
        assert f.read(5)[4] == (1 if bits == 32 else 2)   # really ELF32 / ELF64
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"module-bytes" * 100)
    info = load_kernel(vm.memory, vm.boot_vcpu, path, "console=ttyS0 x=1", str(initrd))
    assert info.protocol == "pvh"
    vcpu = first_exit(vm)
    assert vcpu.run.exit_reason == consts.KVM_EXIT_IO
    assert vcpu.io.port == 0x600 and vcpu.io.size == 4
    regs = vcpu.get_regs()
    sregs = vcpu.get_sregs()
    # %ebx -> start_info, not in page 0; entry = the note's address (+ mov + mov + out)
    assert regs.rbx == info.boot_params and regs.rbx >= 0x1000
    assert regs.rip == info.entry + 2 + 4 + 1
    assert regs.rflags & (1 << 9) == 0                  # IF clear
    assert sregs.cr0 & 1 and not sregs.cr0 & (1 << 31)  # PE on, paging off
    assert sregs.efer & (1 << 10) == 0                  # not in long mode
    for seg in (sregs.cs, sregs.ds, sregs.es, sregs.ss):
        assert seg.base == 0 and seg.limit == 0xFFFFFFFF and seg.db == 1 and seg.l == 0 and seg.present
    assert sregs.cs.type & 0x8                          # code
    assert not sregs.ds.type & 0x8                      # data

    mem = vm.memory
    si = HvmStartInfo.parse(mem.read(regs.rbx, HvmStartInfo.sizeof()))
    assert si.magic == XEN_HVM_START_MAGIC_VALUE and si.version == 1
    assert mem.read(si.cmdline_paddr, 18) == b"console=ttyS0 x=1\0"
    assert si.nr_modules == 1
    mod = HvmModlistEntry.parse(mem.read(si.modlist_paddr, HvmModlistEntry.sizeof()))
    assert mod.size == 1200 and mem.read(mod.paddr, 12) == b"module-bytes"
    assert mod.paddr % 4096 == 0 and mod.paddr + mod.size <= mem.low_end
    entries = [HvmMemmapEntry.parse(mem.read(si.memmap_paddr + 24 * i, 24)) for i in range(si.memmap_entries)]
    assert [(e.addr, e.size, e.type) for e in entries] == mem.e820()
    assert entries[-1].addr + entries[-1].size == 64 << 20
    # BSS (8 KiB at the first page boundary after the text) zeroed despite the 0xAA fill
    assert mem.read(0x101000, 8192) == bytes(8192)

    # Let it finish: it checks the magic itself and exits 0 through 0x501.
    assert vcpu.run_once() == 0
    assert vcpu.io.port == 0x501
    assert vcpu.run_view[vcpu.io.data_offset] == 0


def test_pvh_without_note_is_rejected(vm, tmp_path):
    from vmm.errors import UserError
    data = bytearray(open(guest_path("pvh_entry64"), "rb").read())
    i = data.find(b"Xen\0")
    data[i:i + 4] = b"Nex\0"
    p = tmp_path / "nonote.elf"
    p.write_bytes(bytes(data))
    with pytest.raises(UserError, match="XEN_ELFNOTE_PHYS32_ENTRY"):
        load_kernel(vm.memory, vm.boot_vcpu, str(p))


def test_pvh_segment_outside_ram_is_rejected(tmp_path):
    from vmm.errors import UserError
    v = Vm(VmConfig(memory=16 << 20))
    try:
        data = bytearray(open(guest_path("pvh_entry64"), "rb").read())
        # Move the first PT_LOAD's paddr to 1 GiB (beyond 16 MiB of RAM).
        phoff = struct.unpack_from("<Q", data, 32)[0]
        struct.pack_into("<Q", data, phoff + 24, 1 << 30)
        p = tmp_path / "far.elf"
        p.write_bytes(bytes(data))
        with pytest.raises(UserError, match="does not fit"):
            load_kernel(v.memory, v.boot_vcpu, str(p))
    finally:
        v.close()
