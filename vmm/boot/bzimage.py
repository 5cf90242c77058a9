"""Linux bzImage, 64-bit boot protocol.

Reference: Linux Documentation/arch/x86/boot.rst ("The Linux/x86 Boot
Protocol") and arch/x86/include/uapi/asm/bootparam.h.  We load the
protected-mode kernel at 1 MiB, fill a zero page (struct boot_params) with the
image's setup header plus our fields, and enter at load address + 0x200 in
long mode with %rsi pointing at the zero page.
"""

from __future__ import annotations

from vmm.boot import layout
from vmm.boot.cstruct import Int8ul, Int16ul, Int32ul, Int64ul, Struct
from vmm.boot.pvh import place_initrd, write_cmdline
from vmm.errors import UserError
from vmm.memory import GuestMemory

SETUP_HEADER_OFFSET = 0x1F1
HDRS_MAGIC = 0x53726448          # "HdrS"
BOOT_FLAG = 0xAA55
MIN_PROTOCOL = 0x020C            # 2.12: xloadflags, needed for the 64-bit entry
# The header ends at 0x202 + the byte at 0x201 (boot.rst); a 2.11+ header reaches at least
# the end of handover_offset (0x264..0x268).
MIN_HEADER_END = 0x268
XLF_KERNEL_64 = 1 << 0
LOADED_HIGH = 1 << 0
CAN_USE_HEAP = 1 << 7
E820_MAX_ENTRIES_ZEROPAGE = 128

# struct setup_header (bootparam.h), at offset 0x1f1 of the image and of boot_params.
SetupHeader = Struct(
    "setup_sects" / Int8ul,          # 0x1f1
    "root_flags" / Int16ul,
    "syssize" / Int32ul,
    "ram_size" / Int16ul,
    "vid_mode" / Int16ul,
    "root_dev" / Int16ul,
    "boot_flag" / Int16ul,           # 0x1fe
    "jump" / Int16ul,                # 0x200
    "header" / Int32ul,              # 0x202
    "version" / Int16ul,             # 0x206
    "realmode_swtch" / Int32ul,
    "start_sys_seg" / Int16ul,
    "kernel_version" / Int16ul,
    "type_of_loader" / Int8ul,       # 0x210
    "loadflags" / Int8ul,
    "setup_move_size" / Int16ul,
    "code32_start" / Int32ul,        # 0x214
    "ramdisk_image" / Int32ul,       # 0x218
    "ramdisk_size" / Int32ul,
    "bootsect_kludge" / Int32ul,
    "heap_end_ptr" / Int16ul,        # 0x224
    "ext_loader_ver" / Int8ul,
    "ext_loader_type" / Int8ul,
    "cmd_line_ptr" / Int32ul,        # 0x228
    "initrd_addr_max" / Int32ul,     # 0x22c
    "kernel_alignment" / Int32ul,
    "relocatable_kernel" / Int8ul,
    "min_alignment" / Int8ul,
    "xloadflags" / Int16ul,          # 0x236
    "cmdline_size" / Int32ul,        # 0x238
    "hardware_subarch" / Int32ul,
    "hardware_subarch_data" / Int64ul,
    "payload_offset" / Int32ul,
    "payload_length" / Int32ul,
    "setup_data" / Int64ul,
    "pref_address" / Int64ul,        # 0x258
    "init_size" / Int32ul,           # 0x260
    "handover_offset" / Int32ul,
    "kernel_info_offset" / Int32ul,  # 0x268
)
SETUP_HEADER_SIZE = SetupHeader.sizeof()

# struct boot_e820_entry (packed)
E820Entry = Struct("addr" / Int64ul, "size" / Int64ul, "type" / Int32ul)

# Offsets of the boot_params fields we set outside the setup header.
BP_ACPI_RSDP_ADDR = 0x070        # u64; Linux 5.0+ reads it (boot protocol 2.14), others ignore it
BP_EXT_RAMDISK_IMAGE = 0x0C0
BP_EXT_RAMDISK_SIZE = 0x0C4
BP_EXT_CMD_LINE_PTR = 0x0C8
BP_E820_ENTRIES = 0x1E8
BP_E820_TABLE = 0x2D0


def is_bzimage(data: bytes) -> bool:
    return (len(data) >= 0x206 and int.from_bytes(data[0x1FE:0x200], "little") == BOOT_FLAG
            and int.from_bytes(data[0x202:0x206], "little") == HDRS_MAGIC)


def parse_setup_header(data: bytes, path: str):
    if len(data) < SETUP_HEADER_OFFSET + SETUP_HEADER_SIZE:
        raise UserError(f"{path}: truncated bzImage (no setup header)")
    hdr = SetupHeader.parse(data[SETUP_HEADER_OFFSET:SETUP_HEADER_OFFSET + SETUP_HEADER_SIZE])
    if hdr.boot_flag != BOOT_FLAG or hdr.header != HDRS_MAGIC:
        raise UserError(f"{path}: not a bzImage (no HdrS signature)")
    if hdr.version < MIN_PROTOCOL:
        raise UserError(f"{path}: boot protocol {hdr.version >> 8}.{hdr.version & 0xff} is too old "
                        f"(need 2.12 for the 64-bit entry)")
    if not hdr.xloadflags & XLF_KERNEL_64:
        raise UserError(f"{path}: kernel has no 64-bit entry point (XLF_KERNEL_64 clear)")
    if not hdr.loadflags & LOADED_HIGH:
        raise UserError(f"{path}: zImage (not loaded high) is not supported")
    return hdr


def load_bzimage(mem: GuestMemory, data: bytes, path: str, cmdline: str,
                 initrd: bytes | None, rsdp_addr: int = 0) -> tuple[int, int]:
    """Load; returns (entry_rip, zero_page_paddr).  ``rsdp_addr``: the ACPI
    RSDP (vmm/boot/acpi.py) for boot_params.acpi_rsdp_addr, 0 for none."""
    hdr = parse_setup_header(data, path)
    setup_sects = hdr.setup_sects or 4
    kernel_off = (setup_sects + 1) * 512
    if kernel_off >= len(data):
        raise UserError(f"{path}: truncated bzImage (no protected-mode kernel)")
    kernel = memoryview(data)[kernel_off:]          # (no copy of the kernel: it is written once)
    if hdr.syssize and len(kernel) < hdr.syssize * 16:
        raise UserError(f"{path}: truncated bzImage ({len(kernel)} bytes of kernel, "
                        f"header says {hdr.syssize * 16})")
    # The kernel decompresses itself to pref_address and needs init_size bytes there.
    need = max(layout.KERNEL_LOAD + len(kernel), hdr.pref_address + hdr.init_size)
    if need > mem.low_end:
        raise UserError(f"{path}: kernel needs guest RAM up to {need:#x}; use a larger --memory")
    mem.write(layout.KERNEL_LOAD, kernel)

    raw_cmdline = write_cmdline(mem, cmdline)
    if len(raw_cmdline) > hdr.cmdline_size:
        raise UserError(f"command line is {len(raw_cmdline)} bytes; this kernel accepts {hdr.cmdline_size}")

    # Zero page: the image's own setup header (up to the end the header itself
    # declares: 0x202 + the jump's byte offset), then our fields.
    mem.fill(layout.ZERO_PAGE, 0x1000)
    hdr_end = min(0x202 + data[0x201], SETUP_HEADER_OFFSET + SETUP_HEADER_SIZE)
    if hdr_end < MIN_HEADER_END:
        # The fields we fill in (ramdisk, cmd_line_ptr, ...) would not reach the kernel.
        raise UserError(f"{path}: setup header ends at {hdr_end:#x} (jump byte {data[0x201]:#x}), "
                        f"short of the protocol 2.12 fields (to {MIN_HEADER_END:#x})")
    mem.write(layout.ZERO_PAGE + SETUP_HEADER_OFFSET, data[SETUP_HEADER_OFFSET:hdr_end])
    hdr.vid_mode = 0xFFFF                  # "normal"
    hdr.type_of_loader = 0xFF              # undefined/unregistered loader
    hdr.loadflags = (hdr.loadflags | CAN_USE_HEAP) & 0xFF
    hdr.heap_end_ptr = 0xFE00
    hdr.cmd_line_ptr = layout.CMDLINE
    hdr.ramdisk_image = 0
    hdr.ramdisk_size = 0
    hdr.hardware_subarch = 0
    initrd_addr = 0
    if initrd is not None:
        initrd_addr = place_initrd(mem, len(initrd), need, hdr.initrd_addr_max + 1, path)
        mem.write(initrd_addr, initrd)
        hdr.ramdisk_image = initrd_addr & 0xFFFFFFFF
        hdr.ramdisk_size = len(initrd) & 0xFFFFFFFF
    built = SetupHeader.build(hdr)
    mem.write(layout.ZERO_PAGE + SETUP_HEADER_OFFSET, built[:hdr_end - SETUP_HEADER_OFFSET])
    mem.write_u32(layout.ZERO_PAGE + BP_EXT_CMD_LINE_PTR, 0)
    mem.write_u32(layout.ZERO_PAGE + BP_EXT_RAMDISK_IMAGE, initrd_addr >> 32)
    mem.write_u32(layout.ZERO_PAGE + BP_EXT_RAMDISK_SIZE, (len(initrd) >> 32) if initrd else 0)
    mem.write_u64(layout.ZERO_PAGE + BP_ACPI_RSDP_ADDR, rsdp_addr)

    e820 = mem.e820()[:E820_MAX_ENTRIES_ZEROPAGE]
    mem.write(layout.ZERO_PAGE + BP_E820_ENTRIES, bytes([len(e820)]))
    mem.write(layout.ZERO_PAGE + BP_E820_TABLE,
              b"".join(E820Entry.build(dict(addr=a, size=s, type=t)) for a, s, t in e820))
    return layout.KERNEL_LOAD + 0x200, layout.ZERO_PAGE
