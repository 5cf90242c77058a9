"""bzImage loader on a real Debian kernel (linux-image-amd64, installed by `make setup`).

A Linux boot is impractical on our emulating /dev/kvm (the nested tier boots
one); here we check the zero page and entry state the loader prepares.
"""

from __future__ import annotations

import glob
import os

import pytest

from vmm.boot import load_kernel
from vmm.boot.bzimage import (BP_E820_ENTRIES, BP_E820_TABLE, E820Entry, SETUP_HEADER_OFFSET,
                              SetupHeader)
from vmm.boot.layout import CMDLINE, KERNEL_LOAD, ZERO_PAGE
from vmm.errors import UserError
from vmm.vm import Vm, VmConfig


def debian_bzimage() -> str:
    try:
        from vmm.testhost.packages import kernel_info
        path = str(kernel_info().bzimage)
    except Exception:  # noqa: BLE001 - fall back to whatever /boot has
        cands = sorted(glob.glob("/boot/vmlinuz-*-amd64"))
        path = cands[-1] if cands else ""
    if not path or not os.path.exists(path):
        pytest.fail("no Debian kernel in /boot: `make setup` installs linux-image-amd64")
    return path


@pytest.fixture
def vm():
    v = Vm(VmConfig(memory=512 << 20))
    yield v
    v.close()


def test_bzimage_zero_page(vm, tmp_path):
    path = debian_bzimage()
    image = open(path, "rb").read()
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(os.urandom(3 << 20))
    info = load_kernel(vm.memory, vm.boot_vcpu, path, "console=ttyS0 panic=-1", str(initrd))
    assert info.protocol == "bzimage"
    mem = vm.memory
    zp = mem.read(ZERO_PAGE, 4096)
    hdr = SetupHeader.parse(zp[SETUP_HEADER_OFFSET:])
    img_hdr = SetupHeader.parse(image[SETUP_HEADER_OFFSET:])
    assert hdr.header == 0x53726448 and hdr.boot_flag == 0xAA55
    assert hdr.version == img_hdr.version >= 0x020C
    assert hdr.type_of_loader == 0xFF
    assert hdr.loadflags & 0x01 and hdr.loadflags & 0x80          # LOADED_HIGH, CAN_USE_HEAP
    assert hdr.cmd_line_ptr == CMDLINE
    assert mem.read(CMDLINE, 23) == b"console=ttyS0 panic=-1\0"
    assert hdr.vid_mode == 0xFFFF
    # initrd: where the kernel allows it, page aligned, above the decompressed kernel
    assert hdr.ramdisk_size == 3 << 20
    assert hdr.ramdisk_image % 4096 == 0
    assert hdr.ramdisk_image + hdr.ramdisk_size - 1 <= img_hdr.initrd_addr_max
    assert hdr.ramdisk_image >= img_hdr.pref_address + img_hdr.init_size
    assert mem.read(hdr.ramdisk_image, 3 << 20) == initrd.read_bytes()
    # fields the kernel owns are the image's own
    for f in ("setup_sects", "syssize", "kernel_alignment", "pref_address", "init_size", "xloadflags",
              "initrd_addr_max", "cmdline_size", "relocatable_kernel"):
        assert hdr[f] == img_hdr[f], f
    # e820 as our memory map
    n = zp[BP_E820_ENTRIES]
    table = [E820Entry.parse(zp[BP_E820_TABLE + 20 * i:]) for i in range(n)]
    assert [(e.addr, e.size, e.type) for e in table] == mem.e820()
    # the protected-mode kernel is at 1 MiB
    setup = ((img_hdr.setup_sects or 4) + 1) * 512
    assert mem.read(KERNEL_LOAD, 4096) == image[setup:setup + 4096]
    # 64-bit entry state
    regs, sregs = vm.boot_vcpu.get_regs(), vm.boot_vcpu.get_sregs()
    assert regs.rip == KERNEL_LOAD + 0x200 and regs.rsi == ZERO_PAGE
    assert sregs.efer & (1 << 10) and sregs.cr0 & (1 << 31) and sregs.cs.l == 1
    assert sregs.cs.selector == 0x10 and sregs.ds.selector == 0x18
    assert regs.rflags & (1 << 9) == 0


def test_bzimage_truncated(vm, tmp_path):
    image = open(debian_bzimage(), "rb").read()
    p = tmp_path / "short"
    p.write_bytes(image[: len(image) // 2])
    with pytest.raises(UserError, match="truncated"):
        load_kernel(vm.memory, vm.boot_vcpu, str(p))


def test_bzimage_needs_enough_memory(tmp_path):
    v = Vm(VmConfig(memory=16 << 20))
    try:
        with pytest.raises(UserError, match="larger --memory"):
            load_kernel(v.memory, v.boot_vcpu, debian_bzimage())
    finally:
        v.close()
