"""Extract the ELF vmlinux from a bzImage, to boot it through PVH.

Booting the vmlinux directly (QEMU ``-kernel`` accepts an ELF with the
XEN_ELFNOTE_PHYS32_ENTRY note, which Debian's kernel has) skips the real-mode
setup and the self-decompression, ~2.5 s under TCG.  The bzImage's setup
header gives the compressed payload (payload_offset/payload_length at
0x248/0x24c, relative to the protected-mode code after the setup sectors); we
decompress it like scripts/extract-vmlinux does and check that it is an ELF.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import shutil
import struct
import subprocess
from pathlib import Path

from vmm.testhost.config import TesthostError, file_key, write_if_changed

XEN_ELFNOTE_PHYS32_ENTRY = 18


def _decompress(payload: bytes) -> bytes:
    if payload.startswith(b"\xfd7zXZ\x00"):
        d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        return d.decompress(payload)
    if payload.startswith(b"\x1f\x8b"):
        d = gzip.zlib.decompressobj(16 + gzip.zlib.MAX_WBITS)
        return d.decompress(payload)
    if payload.startswith(b"BZh"):
        return bz2.BZ2Decompressor().decompress(payload)
    if payload.startswith(b"\x5d\x00\x00"):
        return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(payload)
    for magic, tool in ((b"\x28\xb5\x2f\xfd", ["zstd", "-dcq"]), (b"\x02\x21\x4c\x18", ["lz4", "-dcq"]),
                        (b"\x89LZO", ["lzop", "-dcq"])):
        if payload.startswith(magic):
            if not shutil.which(tool[0]):
                raise TesthostError(f"the kernel payload is {tool[0]}-compressed: install {tool[0]}")
            r = subprocess.run(tool, input=payload, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            return r.stdout   # trailing bytes after the frame make these tools exit non-zero
    raise TesthostError(f"unknown compression of the bzImage payload (magic {payload[:6].hex()})")


def extract_vmlinux_bytes(bzimage: bytes) -> bytes:
    if len(bzimage) < 0x250 or bzimage[0x202:0x206] != b"HdrS":
        raise TesthostError("not a bzImage (no HdrS setup header)")
    setup_sects = bzimage[0x1F1] or 4
    payload_offset, payload_length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + payload_offset
    elf = _decompress(bzimage[start:start + payload_length])
    if not elf.startswith(b"\x7fELF"):
        raise TesthostError("the decompressed bzImage payload is not an ELF vmlinux")
    return elf


def has_pvh_note(elf: bytes) -> bool:
    """Whether an ELF64 has a "Xen" note of type XEN_ELFNOTE_PHYS32_ENTRY."""
    if elf[4] != 2:                                   # ELFCLASS64
        return False
    e_phoff, = struct.unpack_from("<Q", elf, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(e_phnum):
        p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from(
            "<IIQQQQ", elf, e_phoff + i * e_phentsize)
        if p_type != 4:                               # PT_NOTE
            continue
        off, end = p_offset, p_offset + p_filesz
        while off + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, off)
            name = elf[off + 12:off + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            off += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    return False


def ensure_vmlinux(bzimage: Path, out: Path) -> Path:
    """``out`` holds the vmlinux of ``bzimage``; re-extracted when the bzImage changes."""
    def build() -> bytes:
        elf = extract_vmlinux_bytes(bzimage.read_bytes())
        if not has_pvh_note(elf):
            raise TesthostError(f"the vmlinux in {bzimage} has no PVH entry note "
                                "(XEN_ELFNOTE_PHYS32_ENTRY): QEMU cannot boot it directly")
        return elf
    return write_if_changed(out, file_key(bzimage), build)
