"""The KVM of the xen_kvm tier (normally the nested test host's) supports Xen HVM guests."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.xen_kvm

# The flags of Linux 6.1's KVM_CAP_XEN_HVM (include/uapi/linux/kvm.h): 0x3f = 63.
XEN_FLAGS_6_1 = {
    "HYPERCALL_MSR": 1 << 0, "INTERCEPT_HCALL": 1 << 1, "SHARED_INFO": 1 << 2,
    "RUNSTATE": 1 << 3, "EVTCHN_2LEVEL": 1 << 4, "EVTCHN_SEND": 1 << 5,
}


def test_kvm_cap_xen_hvm_has_intercept_hcall():
    from kvm_bindings import Kvm, consts
    kvm = Kvm()
    try:
        flags = kvm.check_extension(consts.KVM_CAP_XEN_HVM)
    finally:
        kvm.close()
    print(f"KVM_CAP_XEN_HVM = {flags} ({flags:#x})")
    assert flags & consts.KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL
    for name, bit in XEN_FLAGS_6_1.items():
        assert flags & bit, f"KVM_XEN_HVM_CONFIG_{name} missing from {flags:#x}"
        assert getattr(consts, f"KVM_XEN_HVM_CONFIG_{name}") == bit
    if os.environ.get("VMM_TESTHOST"):
        assert flags == 63      # the nested host's kvm.ko is 6.1's, rebuilt with CONFIG_KVM_XEN


def test_vmm_caps_shows_xen_flags():
    p = subprocess.run([sys.executable, "-m", "vmm", "caps"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=120)
    print(p.stdout)
    assert p.returncode == 0, p.stderr
    rows = dict(line.split(None, 1) for line in p.stdout.splitlines() if line.strip())
    value, _, names = rows["xen_hvm"].partition(" ")
    assert int(value, 16) & 0x3F == 0x3F
    for name in XEN_FLAGS_6_1:
        assert name in names
    if os.environ.get("VMM_TESTHOST"):
        assert rows["backend"].startswith("kvm_amd")   # real SVM (nested), not emulation
        assert rows["emulated"] == "no"


def test_nested_host_reports_the_kvm_fixes_it_carries():
    """The job environment names the fixes in vmm/testhost/kvm_fixes for this kernel
    series; tests/test_xen_guests.py keys its expectations on it."""
    if not os.environ.get("VMM_TESTHOST"):
        pytest.skip("only inside the nested test host")
    from vmm.testhost import modules, packages
    expected = modules.fix_names(packages.kernel_info())
    assert expected, "no KVM fixes for this kernel series"
    assert os.environ.get("VMM_TESTHOST_KVM_FIXES", "").split(",") == expected
