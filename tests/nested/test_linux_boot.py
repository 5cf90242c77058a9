"""A plain Linux boot: `vmm run` boots Debian's packaged kernel (bzImage) with the
`make linux-guest` initramfs, which runs a command and ends the guest.

Needs a KVM that runs a Linux guest at hardware speed (the host's emulating KVM
would take hours), hence the xen_kvm tier: in practice, the nested test host.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from vmm.testhost import packages

pytestmark = pytest.mark.xen_kvm

GUEST_RESET = 80      # vmm.exitcodes.GUEST_RESET: i8042 reset (reboot=k)


def tsc_khz() -> int:
    """This machine's TSC rate: the guest's too, which then skips PIT calibration."""
    for line in open("/proc/cpuinfo"):
        if line.startswith("cpu MHz"):
            return int(float(line.split(":")[1]) * 1000)
    raise AssertionError("no 'cpu MHz' in /proc/cpuinfo")


def test_plain_linux_boot_runs_a_command(linux_guest):
    info = packages.kernel_info()
    script = ("echo UNAME=$(uname -r); echo CPUS=$(grep -c ^processor /proc/cpuinfo); "
              "grep -m1 ^flags /proc/cpuinfo; echo ANSWER=$((6*7)); cat /proc/cmdline")
    cmdline = (f"console=ttyS0 quiet tsc_early_khz={tsc_khz()} tsc=reliable reboot=k panic=-1 "
               f'linuxguest.end=reboot -- sh -c "{script}"')
    cmd = [sys.executable, "-m", "vmm", "run", "--kernel", str(info.bzimage), "--initrd", str(linux_guest),
           "--memory", "512M", "--cpus", "1", "--serial", "stdio", "--timeout", "600", "--cmdline", cmdline]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       errors="replace", timeout=700)
    out = p.stdout.replace("\r\n", "\n")
    print(out)
    print(p.stderr, file=sys.stderr)

    # the guest's own output, through its serial console
    assert "linuxguest: up, kernel " + info.abi in out
    assert re.search(rf"^UNAME={re.escape(info.abi)}$", out, re.M), "uname -r is not the packaged ABI"
    assert re.search(r"^CPUS=1$", out, re.M)
    flags = re.search(r"^flags\s*:(.*)$", out, re.M)
    assert flags, "no flags line from /proc/cpuinfo"
    assert {"fpu", "tsc", "apic", "lm"} <= set(flags.group(1).split())
    assert re.search(r"^ANSWER=42$", out, re.M)
    assert re.search(r"^console=ttyS0 .*linuxguest\.end=reboot", out, re.M)
    assert "linuxguest: exit status 0" in out
    assert "linuxguest: end reboot" in out
    # ... and the VMM's view of how it ended: reboot -f with reboot=k is an i8042 reset
    assert p.returncode == GUEST_RESET, p.stderr
