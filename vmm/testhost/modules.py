"""Build kvm.ko and kvm-amd.ko with CONFIG_KVM_XEN, out of tree, for the packaged kernel.

Debian's kvm.ko lacks Xen support (CONFIG_KVM_XEN is not set).  We rebuild
only KVM from ``linux-source-X.Y`` against ``linux-headers-<abi>``:

* copy ``arch/x86/kvm/*`` into the build folder and ``virt/kvm/`` below it;
* use arch/x86/kvm/Makefile itself as the Kbuild file, with ``$(srctree)``
  paths pointed at the build folder, ``KVM := virt/kvm`` (the object prefix
  that virt/kvm/Makefile.kvm uses), ``CONFIG_KVM_XEN := y`` and
  ``-DCONFIG_KVM_XEN=1``.  Kbuild then lists exactly the objects that
  Debian's config enables (include/config/auto.conf of the headers: e.g.
  kvm_onhyperv.o and svm/svm_onhyperv.o because CONFIG_HYPERV=m), plus
  xen.o, and keeps the kvm-asm-offsets rule.  kvm-intel is not built.
* trace.h's ``TRACE_INCLUDE_PATH`` (``../../arch/x86/kvm``, relative to the
  kernel tree) is pointed at the build folder;
* the fixes in ``kvm_fixes/<series>/*.patch`` are applied (``patch -p1`` on
  the source tree).  They correct KVM's Xen emulation where it deviates from
  Xen (each file says what and why); their names reach the nested host's
  jobs as ``VMM_TESTHOST_KVM_FIXES``, so tests know which behaviour to expect.

The result goes to ``<cache>/testhost/<abi>/modules/`` with a stamp naming the
package versions; it is rebuilt only when they change.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from vmm.testhost.config import TesthostError, locked, testhost_dir
from vmm.testhost.packages import KernelInfo

# Bump when the recipe below changes, to force a rebuild of cached modules.
RECIPE = 2
MODULES = ("kvm.ko", "kvm-amd.ko")
FIXES_DIR = Path(__file__).resolve().parent / "kvm_fixes"


def kvm_fixes(info: KernelInfo) -> list[Path]:
    """The patches applied to this kernel series' KVM, in order."""
    return sorted((FIXES_DIR / info.series).glob("*.patch"))


def fix_names(info: KernelInfo) -> list[str]:
    return [p.stem for p in kvm_fixes(info)]


def modules_dir(info: KernelInfo) -> Path:
    return testhost_dir(info.abi) / "modules"


def module_paths(info: KernelInfo) -> list[Path]:
    return [modules_dir(info) / m for m in MODULES]


def _stamp_wanted(info: KernelInfo) -> dict:
    fixes = {p.stem: hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in kvm_fixes(info)}
    return {"recipe": RECIPE, "abi": info.abi, "version": info.version, "fixes": fixes}


def modules_ready(info: KernelInfo) -> bool:
    stamp = modules_dir(info) / "build.json"
    try:
        return (json.loads(stamp.read_text()) == _stamp_wanted(info)
                and all(p.exists() for p in module_paths(info)))
    except (OSError, ValueError):
        return False


def _extract_kvm_sources(info: KernelInfo, dest: Path) -> None:
    """arch/x86/kvm/* -> dest/, virt/kvm -> dest/virt/kvm."""
    tarball = info.source_tarball
    if not tarball.exists():
        raise TesthostError(f"{tarball} is missing: install {info.source_pkg}={info.version}")
    top = f"linux-source-{info.series}"
    scratch = dest.parent / "src"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    # tar(1) with xz is as fast as anything here (~7 s: it has to read the whole stream).
    r = subprocess.run(["tar", "-xJf", str(tarball), "-C", str(scratch), "--wildcards",
                        f"{top}/arch/x86/kvm/*", f"{top}/virt/kvm/*"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise TesthostError(f"extracting KVM sources from {tarball} failed:\n{r.stdout[-2000:]}")
    for fix in kvm_fixes(info):
        r = subprocess.run(["patch", "-p1", "--batch", "--forward", "-d", str(scratch / top), "-i", str(fix)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise TesthostError(f"KVM fix {fix} does not apply to {info.source_pkg} {info.version}; "
                                f"update it:\n{r.stdout[-2000:]}")
    shutil.copytree(scratch / top / "arch/x86/kvm", dest)
    (dest / "virt").mkdir()
    shutil.copytree(scratch / top / "virt/kvm", dest / "virt/kvm")
    shutil.rmtree(scratch)


def write_kbuild(build: Path) -> None:
    """Turn the copied arch/x86/kvm/Makefile into our Kbuild file (see module doc)."""
    makefile = (build / "Makefile").read_text()
    body, n1 = re.subn(r"\$\(srctree\)/arch/x86/kvm\b", "$(src)", makefile)
    body, n2 = re.subn(r"include \$\(srctree\)/virt/kvm/Makefile\.kvm",
                       "include $(src)/virt/kvm/Makefile.kvm", body)
    if not (n1 and n2) or "kvm-$(CONFIG_KVM_XEN)" not in body or "kvm-asm-offsets" not in body:
        raise TesthostError("arch/x86/kvm/Makefile has an unexpected shape: the Xen-enabled "
                            "KVM build recipe needs updating for this kernel")
    head = ("# Generated by vmm.testhost.modules: Debian's arch/x86/kvm/Makefile with\n"
            "# CONFIG_KVM_XEN enabled, built out of tree.\n"
            "CONFIG_KVM_XEN := y\n"
            "CONFIG_KVM_INTEL :=\n"
            "KVM := virt/kvm\n"
            "ccflags-y += -DCONFIG_KVM_XEN=1\n\n")
    (build / "Makefile").unlink()
    (build / "Kbuild").write_text(head + body)

    trace = build / "trace.h"
    text = trace.read_text()
    # "<build>/trace.h" is searched for via `-I $(src)` (the Makefile's ccflags);
    # an absolute path here would be macro-expanded token by token (e.g. a
    # folder named "linux" becomes "1"), so the build folder is named as ".".
    new, n = re.subn(r"^#define TRACE_INCLUDE_PATH \.\./\.\./arch/x86/kvm$",
                     "#define TRACE_INCLUDE_PATH .", text, flags=re.M)
    if n != 1:
        raise TesthostError("arch/x86/kvm/trace.h: TRACE_INCLUDE_PATH not found where expected")
    trace.write_text(new)


def build_modules(info: KernelInfo, log, jobs: int = 2, force: bool = False) -> list[Path]:
    """Build (if needed) and return the paths of the Xen-enabled kvm.ko and kvm-amd.ko."""
    top = testhost_dir(info.abi)
    with locked(top / "build.lock"):
        if modules_ready(info) and not force:
            return module_paths(info)
        kbuild_dir = info.headers_dir
        if not (kbuild_dir / "Makefile").exists():
            raise TesthostError(f"{kbuild_dir} is missing: install {info.headers_pkg}")
        build = top / "build"
        shutil.rmtree(build, ignore_errors=True)
        t0 = time.monotonic()
        log(f"testhost: building Xen-enabled kvm.ko, kvm-amd.ko for {info.abi} in {build}")
        _extract_kvm_sources(info, build)
        write_kbuild(build)
        logfile = top / "modules-build.log"
        with open(logfile, "w") as f:
            r = subprocess.run(["make", f"-j{jobs}", "-C", str(kbuild_dir), f"M={build}", "modules"],
                               stdout=f, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            tail = "\n".join(logfile.read_text().splitlines()[-25:])
            raise TesthostError(f"building kvm modules failed (exit {r.returncode}); "
                                f"full log: {logfile}\n{tail}")
        if not (build / "xen.o").exists():
            raise TesthostError(f"xen.o was not built (CONFIG_KVM_XEN not applied); log: {logfile}")
        out = modules_dir(info)
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        for m in MODULES:
            # Strip debug info (kvm.ko: 19 MB -> 2 MB): the guest reads them at boot.
            subprocess.run(["strip", "--strip-debug", "-o", str(out / m), str(build / m)], check=True)
        (out / "build.json").write_text(json.dumps(_stamp_wanted(info)))
        shutil.rmtree(build, ignore_errors=True)
        log(f"testhost: modules built in {time.monotonic() - t0:.0f} s -> {out}")
        return module_paths(info)


def default_jobs() -> int:
    return max(1, min(2, os.cpu_count() or 1))
