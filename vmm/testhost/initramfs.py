"""Busybox initramfs images: the outer test host's and ``make linux-guest``'s.

Written as uncompressed newc cpio archives (the guest unpacks them without a
decompressor, which is faster under TCG).  The userland is Debian's
``busybox-static`` (one static binary; ``init`` runs ``busybox --install``).
Kernel modules come from ``/lib/modules/<abi>`` with their dependencies
resolved through ``modules.dep``, loaded in order by ``init``.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import shutil
import subprocess
from pathlib import Path

from vmm.testhost.config import TesthostError, file_key, guest_images_dir, locked, write_if_changed

BUSYBOX = Path("/bin/busybox")

# What the outer VM needs from Debian's modules: virtio-mmio transport, the
# virtio-serial ports, the 9p root share, the overlay, kvm-amd's deps
# (irqbypass, ccp), and tun for the taps of virtio-net tests.  kvm.ko / kvm-amd.ko
# are our Xen-enabled builds.
OUTER_MODULES = ("virtio_mmio", "virtio_console", "9pnet_virtio", "9p", "overlay",
                 "irqbypass", "ccp", "tun")

# What the Linux guest loads for our devices (Debian builds them as modules): the
# virtio PCI transport, virtio-blk (/dev/vda), virtio-net (eth0), virtio-rng (/dev/hwrng), and
# pvpanic-mmio (the DSDT's QEMU0001 at port 0x505: a panic ends `vmm run` with GUEST_PANIC).
LINUX_GUEST_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "virtio-rng", "pvpanic-mmio")


class Cpio:
    """A minimal newc ("070701") cpio writer."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ino = 1
        self._dirs: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        name_b = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0)
        self._ino += 1
        hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._parts.append(hdr + name_b + b"\0" * (-(len(hdr) + len(name_b)) % 4))
        self._parts.append(data + b"\0" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        name = name.strip("/")
        if not name or name in self._dirs:
            return
        parent = name.rpartition("/")[0]
        if parent:
            self.dir(parent)
        self._dirs.add(name)
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        name = name.strip("/")
        self.dir(name.rpartition("/")[0])
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name: str, target: str) -> None:
        name = name.strip("/")
        self.dir(name.rpartition("/")[0])
        self._entry(name, 0o120777, target.encode())

    def bytes(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return b"".join(self._parts)


def read_module(path: Path) -> bytes:
    """A module's ELF bytes (decompressing .ko.xz/.ko.gz/.ko.zst for busybox insmod)."""
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        import gzip
        return gzip.decompress(data)
    if path.suffix == ".zst":
        if not shutil.which("zstd"):
            raise TesthostError(f"{path} is zstd-compressed: install zstd")
        return subprocess.run(["zstd", "-dcq", str(path)], check=True, stdout=subprocess.PIPE).stdout
    return data


def module_order(modules_dir: Path, names) -> list[str]:
    """Paths (relative to ``modules_dir``) of ``names`` and their dependencies, deps first."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    dep_file = modules_dir / "modules.dep"
    if not dep_file.exists():
        raise TesthostError(f"{dep_file} is missing: is the kernel package installed?")
    for line in dep_file.read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
        base = Path(mod).name.split(".ko")[0]
        by_name[base] = mod
        by_name.setdefault(base.replace("-", "_"), mod)
    order: list[str] = []

    def visit(mod: str) -> None:
        if mod in order:
            return
        for d in reversed(deps.get(mod, [])):   # modules.dep lists the deepest dependency last
            visit(d)
        order.append(mod)

    builtin = modules_dir / "modules.builtin"
    builtins = {Path(x).name.split(".ko")[0] for x in builtin.read_text().split()} if builtin.exists() else set()
    for name in names:
        mod = by_name.get(name) or by_name.get(name.replace("-", "_"))
        if mod is None:
            if name in builtins or name.replace("_", "-") in builtins:
                continue
            raise TesthostError(f"kernel module {name} not found in {modules_dir}")
        visit(mod)
    return order


def _require_busybox() -> None:
    if not BUSYBOX.exists():
        raise TesthostError(f"{BUSYBOX} is missing: install busybox-static (vmm testhost prepare)")


def _script_key(script: Path) -> str:
    return hashlib.sha256(script.read_bytes()).hexdigest()


def build_busybox_initramfs(init: Path, modules: list[Path], dirs, out: Path) -> Path:
    """busybox, ``init``, ``modules`` (loaded by init in this order, from
    etc/modules.order) and empty ``dirs``; rebuilt only when an input changes."""
    _require_busybox()
    inputs = [BUSYBOX, *modules]
    key = {"init": _script_key(init), "files": [file_key(p) for p in inputs]}

    def build() -> bytes:
        c = Cpio()
        c.file("init", init.read_bytes(), 0o755)
        c.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
        names = []
        for path in modules:
            name = path.name.split(".ko")[0] + ".ko"
            c.file(f"lib/modules/{name}", read_module(path))
            names.append(name)
        c.file("etc/modules.order", ("\n".join(names) + "\n").encode() if names else b"")
        for d in dirs:
            c.dir(d)
        return c.bytes()

    return write_if_changed(out, key, build)


def build_outer(modules_dir: Path, kvm_modules: list[Path], out: Path) -> Path:
    """The outer VM's initramfs: busybox, guest-images/testhost/init, modules in load order."""
    _require_busybox()
    order = module_order(modules_dir, OUTER_MODULES)
    return build_busybox_initramfs(guest_images_dir() / "testhost" / "init",
                                   [*(modules_dir / m for m in order), *kvm_modules],
                                   ("proc", "sys", "dev", "lower", "rw", "newroot", "tmp"), out)


def build_linux_guest(modules_dir: Path, out: Path, modules=LINUX_GUEST_MODULES) -> Path:
    """``make linux-guest``: busybox + guest-images/linux/init + ``modules``."""
    _require_busybox()
    order = module_order(modules_dir, modules) if modules else []
    return build_busybox_initramfs(guest_images_dir() / "linux" / "init",
                                   [modules_dir / m for m in order],
                                   ("proc", "sys", "dev", "tmp", "root"), out)
