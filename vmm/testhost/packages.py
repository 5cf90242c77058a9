"""Debian packages the nested test host needs, and the kernel they give us.

The kernel ABI (``6.1.0-NN-amd64``) is never written down anywhere: it is the
dependency of the installed ``linux-image-amd64`` metapackage.  Headers and
source must match it exactly: ``linux-headers-<abi>`` and
``linux-source-<major.minor>`` at the image's source version.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from vmm.testhost.config import TesthostError

# What `prepare` installs (with --no-install-recommends).  The headers pull in
# linux-kbuild and the gcc the kernel was built with.
BASE_PACKAGES = (
    "qemu-system-x86",      # the outer VM, under TCG
    "linux-image-amd64",    # the outer (and inner) guest kernel + its modules
    "linux-headers-amd64",  # to build kvm.ko / kvm-amd.ko out of tree
    "busybox-static",       # the initramfs' userland
    "xz-utils",             # linux-source-*.tar.xz
    "make",
    "binutils",             # strip
    "patch",                # vmm/testhost/kvm_fixes
)

META_IMAGE = "linux-image-amd64"

_apt_updated = False


@dataclass(frozen=True)
class KernelInfo:
    """A packaged Debian kernel: its ABI and version."""
    abi: str             # uname -r of the packaged kernel, e.g. 6.1.0-56-amd64
    version: str         # Debian version of linux-image-<abi>, e.g. 6.1.192-2

    @property
    def series(self) -> str:          # "6.1"
        return ".".join(self.abi.split(".")[:2])

    @property
    def image_pkg(self) -> str:
        return f"linux-image-{self.abi}"

    @property
    def headers_pkg(self) -> str:
        return f"linux-headers-{self.abi}"

    @property
    def source_pkg(self) -> str:
        return f"linux-source-{self.series}"

    @property
    def source_tarball(self) -> Path:
        return Path(f"/usr/src/linux-source-{self.series}.tar.xz")

    @property
    def bzimage(self) -> Path:
        return Path(f"/boot/vmlinuz-{self.abi}")

    @property
    def modules_dir(self) -> Path:
        return Path(f"/lib/modules/{self.abi}")

    @property
    def headers_dir(self) -> Path:
        return Path(f"/usr/src/linux-headers-{self.abi}")


def installed_versions(pkgs) -> dict[str, str | None]:
    """Installed version of each package, or None when it is not installed."""
    pkgs = list(pkgs)
    result: dict[str, str | None] = {p: None for p in pkgs}
    if not shutil.which("dpkg-query"):
        raise TesthostError("dpkg-query not found: the nested test host needs a Debian (apt) system")
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package}\t${db:Status-Abbrev}\t${Version}\n", *pkgs],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    for line in out.splitlines():
        name, status, version = (line.split("\t") + ["", ""])[:3]
        if status.startswith("ii") and name in result:
            result[name] = version
    return result


def _dpkg_field(pkg: str, field: str) -> str:
    r = subprocess.run(["dpkg-query", "-W", f"-f=${{{field}}}", pkg],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise TesthostError(f"package {pkg} is not installed ({r.stderr.strip()})")
    return r.stdout.strip()


def kernel_info() -> KernelInfo:
    """The kernel that the installed linux-image-amd64 metapackage points at."""
    if installed_versions([META_IMAGE])[META_IMAGE] is None:
        raise TesthostError(f"{META_IMAGE} is not installed: run `vmm testhost prepare`")
    depends = _dpkg_field(META_IMAGE, "Depends")
    m = re.search(r"\blinux-image-([0-9][^\s,()]*)", depends)
    if not m:
        raise TesthostError(f"cannot find the kernel ABI in {META_IMAGE}'s Depends: {depends!r}")
    abi = m.group(1)
    image = f"linux-image-{abi}"
    version = installed_versions([image])[image]
    if version is None:
        raise TesthostError(f"{image} (dependency of {META_IMAGE}) is not installed: "
                            "run `vmm testhost prepare`")
    # linux-source-X.Y carries the same Debian version as the image (both come
    # from the `linux` source; the image's own source is linux-signed-amd64
    # with a "+N" version, so ${source:Version} is not the one to use).
    return KernelInfo(abi=abi, version=version)


def _is_root() -> bool:
    return os.geteuid() == 0


def _apt(args: list[str], log) -> None:
    cmd = ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=600", *args]
    log(f"testhost: $ {' '.join(cmd)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        tail = "\n".join(r.stdout.splitlines()[-15:])
        raise TesthostError(f"`{' '.join(cmd)}` failed (exit {r.returncode}):\n{tail}")


def apt_install(specs: list[str], log) -> None:
    """apt-get install ``specs`` (after one `apt-get update` per process)."""
    global _apt_updated
    if not specs:
        return
    if not _is_root():
        raise TesthostError("missing Debian packages: " + " ".join(specs) +
                            "\n  install them as root: apt-get install --no-install-recommends "
                            + " ".join(specs))
    if not shutil.which("apt-get"):
        raise TesthostError("apt-get not found: install these packages by hand: " + " ".join(specs))
    if not _apt_updated:
        _apt(["update"], log)
        _apt_updated = True
    _apt(["install", "-y", "--no-install-recommends", *specs], log)


def ensure_packages(log) -> KernelInfo:
    """Install what is missing; return the kernel whose headers and source are installed."""
    have = installed_versions(BASE_PACKAGES)
    apt_install([p for p in BASE_PACKAGES if have[p] is None], log)
    info = kernel_info()
    have = installed_versions([info.image_pkg, info.headers_pkg, info.source_pkg])
    wanted = []
    if have[info.headers_pkg] != info.version:
        wanted.append(f"{info.headers_pkg}={info.version}")
    if have[info.source_pkg] != info.version:
        wanted.append(f"{info.source_pkg}={info.version}")
    try:
        apt_install(wanted, log)
    except TesthostError as e:
        raise TesthostError(f"{e}\n  the headers and source must be version {info.version}, like "
                            f"{info.image_pkg}; if the archive no longer has it, upgrade the kernel: "
                            "apt-get install linux-image-amd64 linux-headers-amd64") from None
    return info


def missing_packages() -> list[str]:
    """What `prepare` would install (for `status`), without installing anything."""
    have = installed_versions(BASE_PACKAGES)
    missing = [p for p in BASE_PACKAGES if have[p] is None]
    try:
        info = kernel_info()
    except TesthostError:
        return missing
    have = installed_versions([info.headers_pkg, info.source_pkg])
    if have[info.headers_pkg] != info.version:
        missing.append(f"{info.headers_pkg}={info.version}")
    if have[info.source_pkg] != info.version:
        missing.append(f"{info.source_pkg}={info.version}")
    return missing
