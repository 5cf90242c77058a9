"""The dependency direction of ARCHITECTURE.md: kvm_bindings <- vmm <- devices, xen.

* only kvm_bindings talks ioctls (no fcntl/ctypes elsewhere), but for tun's on a tap
  (devices/virtio/tap.py: TUNSETIFF and friends, no KVM in them);
* kvm_bindings imports nothing of ours;
* vmm's library modules import neither devices nor xen — only the composition
  root (vmm/machine.py, the machine builder) assembles a machine from them.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPOSITION_ROOTS = {"vmm/machine.py"}
# ctypes for libc calls other than KVM's that Python's os module lacks: prctl(PR_SET_PDEATHSIG) so
# QEMU dies with its runner, fallocate(2) with a mode (virtio-blk's discard punches holes).
CTYPES_NOT_FOR_KVM = {"vmm/testhost/launcher.py", "devices/virtio/blk.py"}
# fcntl.ioctl for something other than KVM: the tap behind virtio-net (if_tun.h's ioctls).
IOCTLS_NOT_FOR_KVM = {"devices/virtio/tap.py"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def sources(pkg: str):
    for p in sorted((ROOT / pkg).rglob("*.py")):
        yield p.relative_to(ROOT).as_posix(), imports(p)


def uses_ioctl(path: Path) -> bool:
    """fcntl.ioctl / `from fcntl import ioctl` anywhere in the file."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "ioctl":
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "fcntl" and any(a.name == "ioctl" for a in node.names):
            return True
    return False


def test_only_kvm_bindings_issues_ioctls():
    for pkg in ("vmm", "devices", "xen"):
        for rel, names in sources(pkg):
            if rel not in CTYPES_NOT_FOR_KVM:
                assert "ctypes" not in names, f"{rel} imports ctypes"
            if rel in IOCTLS_NOT_FOR_KVM:
                assert not {"kvm_bindings", "ctypes"} & names, f"{rel} may issue tun's ioctls only"
                continue
            assert not uses_ioctl(ROOT / rel), f"{rel} issues ioctls"


def test_kvm_bindings_is_the_bottom():
    for rel, names in sources("kvm_bindings"):
        assert not names & {"vmm", "devices", "xen"}, rel


def test_vmm_does_not_depend_on_devices_or_xen():
    for rel, names in sources("vmm"):
        if rel in COMPOSITION_ROOTS:
            continue
        assert not names & {"devices", "xen"}, f"{rel} imports {names & {'devices', 'xen'}}"


def test_devices_do_not_depend_on_xen():
    for rel, names in sources("devices"):
        assert "xen" not in names, rel


def test_xen_abi_names_are_not_retyped():
    """xen/abi is the one home of the Xen ABI: no other module assigns a name it exports
    (``XENMAPIDX_grant_table_status = 1 << 31`` beside ``abi.XENMAPIDX_grant_table_status``)."""
    from xen import abi
    exported = set(abi.__dict__) - {n for n in abi.__dict__ if n.startswith("_")}
    for pkg in ("vmm", "devices", "xen", "bench"):
        for p in sorted((ROOT / pkg).rglob("*.py")):
            rel = p.relative_to(ROOT).as_posix()
            if rel.startswith("xen/abi/"):
                continue
            for node in ast.parse(p.read_text(), rel).body:
                targets = node.targets if isinstance(node, ast.Assign) else \
                    [node.target] if isinstance(node, ast.AnnAssign) else []
                for t in targets:
                    assert not (isinstance(t, ast.Name) and t.id in exported), \
                        f"{rel}:{node.lineno} re-types abi.{t.id}"


def test_the_cffi_extension_is_private_to_kvm_bindings():
    """kvm_bindings._kvm (the compiled extension) is imported by kvm_bindings only; the
    others use its public names (consts, ffi, run_vcpu_fd, atomic_*)."""
    for pkg in ("vmm", "devices", "xen", "bench", "tests"):
        for p in sorted((ROOT / pkg).rglob("*.py")):
            rel = p.relative_to(ROOT).as_posix()
            for node in ast.walk(ast.parse(p.read_text(), rel)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                if isinstance(node, ast.ImportFrom) and node.module == "kvm_bindings":
                    mods += [f"kvm_bindings.{a.name}" for a in node.names]
                assert not any(m == "kvm_bindings._kvm" or m.startswith("kvm_bindings._kvm.") for m in mods), \
                    f"{rel}:{node.lineno} imports kvm_bindings._kvm"
