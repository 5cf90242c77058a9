"""Everything the outer VM needs, installed/built on demand and cached.

``prepare()`` = Debian packages + Xen-enabled kvm modules + vmlinux +
initramfs.  ``check()`` says, without installing or building anything,
whether a ``run`` could start right away and what is missing.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from vmm.testhost import initramfs, launcher, modules, packages, vmlinux
from vmm.testhost.config import TesthostError, testhost_dir


def _quiet(_msg: str) -> None:
    pass


def prepare(log=_quiet, jobs: int | None = None, force_modules: bool = False) -> launcher.Artifacts:
    info = packages.ensure_packages(log)
    kvm = modules.build_modules(info, log, jobs=jobs or modules.default_jobs(), force=force_modules)
    top = testhost_dir(info.abi)
    vml = vmlinux.ensure_vmlinux(info.bzimage, top / "vmlinux")
    initrd = initramfs.build_outer(info.modules_dir, kvm, top / "initramfs.cpio")
    return launcher.Artifacts(vmlinux=vml, initramfs=initrd, kvm_fixes=tuple(modules.fix_names(info)))


def artifacts_if_ready() -> launcher.Artifacts:
    """The artifacts when nothing needs installing or building (cheap steps are redone)."""
    missing = check().missing
    if missing:
        raise TesthostError("the nested test host is not prepared: " + "; ".join(missing) +
                            "\n  run `vmm testhost prepare` (or `make testhost-prepare`)")
    return prepare()


@dataclass
class Status:
    """What the test host's cache has and lacks for one kernel."""
    abi: str | None
    version: str | None
    missing: list[str]
    present: list[str]

    @property
    def ready(self) -> bool:
        return not self.missing


def check() -> Status:
    missing: list[str] = []
    present: list[str] = []
    try:
        pk = packages.missing_packages()
    except TesthostError as e:
        return Status(None, None, [str(e)], [])
    if pk:
        missing.append("Debian packages: " + " ".join(pk))
    else:
        present.append("Debian packages: " + " ".join(packages.BASE_PACKAGES))
    if not shutil.which(launcher.QEMU):
        missing.append(f"{launcher.QEMU} not on PATH")
    try:
        info = packages.kernel_info()
    except TesthostError:
        return Status(None, None, missing, present)
    present.append(f"kernel: {info.image_pkg} {info.version} ({info.bzimage})")
    if modules.modules_ready(info):
        fixes = ", ".join(modules.fix_names(info)) or "none"
        present.append(f"Xen-enabled kvm modules: {modules.modules_dir(info)} (fixes: {fixes})")
    else:
        missing.append(f"Xen-enabled kvm modules for {info.abi} (not built yet)")
    top = testhost_dir(info.abi)
    for name in ("vmlinux", "initramfs.cpio"):
        if (top / name).exists():
            present.append(f"{name}: {top / name}")
    return Status(info.abi, info.version, missing, present)
