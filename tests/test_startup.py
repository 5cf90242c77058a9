"""What a `vmm` start imports (bench/startup.py times it).  Every module costs its import at
each start, ~25x more in the nested test host where the Linux boot benchmark runs: those a
run doesn't need are imported where they are used, and this keeps them out."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

from conftest import ROOT, guest_path

# Builds (and closes, never runs) the machine `vmm ARGS...` describes; prints sys.modules.
BUILD = """
import json, sys
from vmm.cli import build_parser, spec_from_args
from vmm.machine import build
args = build_parser(sys.argv[1:]).parse_args(sys.argv[1:])
build(spec_from_args(args)).close()
print(json.dumps(sorted(sys.modules)))
"""
VERSION = """
import json, sys
from vmm.cli import main
try:
    main(["--version"])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)))
"""
# Never needed to build a machine: the snapshot format and the control socket (vmm restore,
# --api-socket), virtio (--drive, --net, --virtio-rng), the installed metadata.
NOT_FOR_A_RUN = ("vmm.snapshot", "vmm.api", "devices.virtio", "importlib.metadata")
# Nor, without --xen: the domain and the ABI, and construct (which the boot path's structs
# don't use: vmm/boot/cstruct.py).
XEN = ("xen.domain", "xen.abi", "xen.toolstack", "construct")


def modules(code: str, *args: str) -> set[str]:
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    return set(json.loads(p.stdout.splitlines()[-1]))


def imported(mods: set[str], names) -> set[str]:
    return {m for m in mods for n in names if m == n or m.startswith(n + ".")}


def test_a_machine_without_xen_imports_none_of_it():
    mods = modules(BUILD, "run", "--kernel", guest_path("hello"), "--serial", "none")
    assert "vmm.machine" in mods and "devices.board" in mods
    assert not imported(mods, NOT_FOR_A_RUN + XEN)


def test_a_xen_machine_imports_only_what_it_runs():
    mods = modules(BUILD, "run", "--xen", "--kernel", guest_path("xen_smoke"), "--serial", "none")
    assert "xen.domain" in mods and "xen.toolstack" in mods
    assert not imported(mods, NOT_FOR_A_RUN)


def test_version_imports_no_machine():
    mods = modules(VERSION)
    assert not imported(mods, ("vmm.machine", "importlib.metadata", "kvm_bindings"))


def test_the_version_is_the_installed_one():
    from importlib import metadata

    import vmm
    assert metadata.version("vmm") == vmm.__version__


def test_every_dataclass_has_a_docstring():
    """@dataclass gives a class without one a docstring made by inspect.signature: 19 of those
    were ~1 ms of every --xen start (~25 ms in the nested test host)."""
    for pkg in ("kvm_bindings", "vmm", "devices", "xen"):
        for p in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(p.read_text())):
                if isinstance(node, ast.ClassDef) and any(
                        "dataclass" in ast.unparse(d) for d in node.decorator_list):
                    assert ast.get_docstring(node), f"{p.relative_to(ROOT)}:{node.lineno} {node.name} has no docstring"
