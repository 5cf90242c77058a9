"""The machine builder (vmm/machine.py): the phase table, the order phases run in,
and machines built in-process from a spec running kit guests on the real /dev/kvm."""

from __future__ import annotations

import json
import signal

import pytest

from conftest import guest_path
from vmm.boot import load_kernel
from vmm.errors import UserError, internal_errors
from vmm.machine import (BUILD_PHASES, CONTRIBUTIONS, PHASE_NAMES, PHASES, MachineBuilder, MachineSpec,
                         XenConfig, build, contributes)


# ---------------------------------------------------------------- the table
def test_every_need_is_an_earlier_phase_with_a_reason():
    assert len(set(PHASE_NAMES)) == len(PHASES)
    assert PHASE_NAMES[0] == "core" and PHASE_NAMES[-1] == "late"
    for i, phase in enumerate(PHASES):
        for need, why in phase.needs.items():
            assert need in PHASE_NAMES[:i], f"{phase.name} needs {need}, which does not come before it"
            assert why.strip(), f"{phase.name} -> {need}: no reason given"


def test_contributions_belong_to_declared_phases():
    assert list(CONTRIBUTIONS) == list(PHASE_NAMES)
    with pytest.raises(ValueError, match="no phase"):
        contributes("devices")
    with pytest.raises(ValueError, match="no phase"):
        MachineBuilder(MachineSpec()).add("devices", lambda m: None)


def test_phases_run_in_the_declared_order():
    """Every phase's contributions replaced by recorders: build runs all but late,
    in table order, each phase's contributions in the order given; start runs late."""
    ran = []
    b = MachineBuilder(MachineSpec(kernel=guest_path("hello")))
    for name in PHASE_NAMES:
        b.replace(name, lambda m, n=name: ran.append((n, 1)), lambda m, n=name: ran.append((n, 2)))
    m = b.build()
    assert ran == [(n, k) for n in BUILD_PHASES for k in (1, 2)]
    assert m.phases_run == list(BUILD_PHASES)
    m.start()
    assert ran[-2:] == [("late", 1), ("late", 2)] and m.phases_run == list(PHASE_NAMES)
    with pytest.raises(RuntimeError):
        m.start()
    m.close()


def test_a_failing_phase_closes_what_was_built():
    closed = []
    b = MachineBuilder(MachineSpec(kernel=guest_path("hello")))
    for name in PHASE_NAMES:
        b.replace(name)
    b.add("core", lambda m: m.on_close(lambda: closed.append("core")))
    b.add("platform", lambda m: m.on_close(lambda: closed.append("platform")))

    def broken(m):
        raise UserError("no such device")
    b.add("pci", broken)
    b.add("firmware", lambda m: closed.append("firmware ran"))
    with pytest.raises(UserError, match="no such device"):
        b.build()
    assert closed == ["platform", "core"]          # last registered first; later phases never ran


def test_spec_is_plain_values():
    spec = MachineSpec(kernel="k", initrd="i", cmdline="a=b", memory=64 << 20, cpus=2, serial="none",
                       xen=XenConfig(version=(4, 13), hypercalls="port", nr_pirqs=64), pci_testdev=True,
                       trace=["xen.*"])
    assert spec.irqchip == "split"                  # the default with Xen
    again = MachineSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert MachineSpec().irqchip == "kernel"


@pytest.mark.parametrize("kwargs, message", [
    (dict(kernel="/nonexistent/k"), "kernel not found"),
    (dict(initrd="/nonexistent/i"), "initrd not found"),
    (dict(pci=False, pci_testdev=True), "need the PCI bus"),
    (dict(pci=False, xen=XenConfig()), "--xen needs the PCI bus"),
    (dict(xen=XenConfig(nr_pirqs=8)), "--xen-nr-pirqs"),
])
def test_spec_validation(kwargs, message):
    spec = MachineSpec(**{"kernel": guest_path("hello"), **kwargs})
    with pytest.raises(UserError, match=message):
        build(spec)


# ---------------------------------------------------------------- real machines
def run(machine, timeout: float = 60) -> int:
    errors_before = len(internal_errors())
    sigint = signal.getsignal(signal.SIGINT)
    try:
        machine.start()
        assert signal.getsignal(signal.SIGINT) is not sigint     # SIGINT ends the VM meanwhile
        code = machine.wait(timeout)
    finally:
        machine.close()
    assert signal.getsignal(signal.SIGINT) is sigint             # and is given back
    assert len(internal_errors()) == errors_before, internal_errors()[errors_before:]
    return code


def test_kit_guest_in_process(tmp_path):
    out = tmp_path / "com1.txt"
    m = build(MachineSpec(kernel=guest_path("hello"), cmdline="console=ttyS0 hello=world",
                          memory=64 << 20, serial=f"file:{out}"))
    assert m.phases_run == list(BUILD_PHASES)
    assert m.pci is not None and m.xen is None and m.xen_platform is None and m.rsdp
    assert m.boot_info.protocol == "pvh"
    code = run(m)
    text = out.read_text()
    assert code == 0, (m.vm.exit_reason, text)
    assert "cmdline: console=ttyS0 hello=world" in text and "PASS" in text.splitlines()
    assert m.phases_run == list(PHASE_NAMES) and m.closed


def test_xen_guest_in_process(tmp_path):
    out = tmp_path / "com1.txt"
    m = build(MachineSpec(kernel=guest_path("xen_smoke"), memory=64 << 20, serial=f"file:{out}",
                          xen=XenConfig(hypercalls="port")))
    assert m.vm.irqchip.name == "split" and m.xen is not None and m.xen_platform is not None
    assert m.pci.devices[m.xen_platform.devfn] is m.xen_platform
    code = run(m)
    assert code == 0 and "PASS" in out.read_text().splitlines(), (m.vm.exit_reason, out.read_text())


def test_boot_phase_is_swappable(tmp_path):
    """What a restore does: the same machine, another boot phase (here: another kernel)."""
    def boot_exitcode(m):
        m.boot_info = load_kernel(m.vm.memory, m.vm.boot_vcpu, guest_path("exitcode"), rsdp_addr=m.rsdp)
    m = MachineBuilder(MachineSpec(kernel=guest_path("hello"), memory=64 << 20, serial="none")) \
        .replace("boot", boot_exitcode).build()
    assert run(m) == 42 and "debug-exit" in m.vm.exit_reason


def test_a_failed_build_releases_the_vm(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a kernel\n" * 20)
    built = []
    b = MachineBuilder(MachineSpec(kernel=str(junk), memory=64 << 20, serial="none"))
    b.add("core", built.append)
    with pytest.raises(UserError, match="not a PVH ELF or a bzImage"):
        b.build()
    assert built[0].closed and built[0].vm._closed


def test_architecture_lists_the_phases_in_order():
    from conftest import ROOT
    text = (ROOT / "ARCHITECTURE.md").read_text()
    section = text[text.index("## Building a machine"):]
    section = section[:section.index("\n## ")]
    rows = [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == list(PHASE_NAMES)
