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


def boot_linux(linux_guest, cmdline: str, *args: str, wrap=()) -> tuple[str, subprocess.CompletedProcess]:
    """`vmm run` Debian's bzImage with the linux-guest initramfs (under ``wrap``, e.g.
    `ip netns exec NS`); (console text, process)."""
    cmd = [*wrap, sys.executable, "-m", "vmm", "run", "--kernel", str(packages.kernel_info().bzimage),
           "--initrd", str(linux_guest), "--memory", "512M", "--serial", "stdio", "--timeout", "600",
           *args, "--cmdline", cmdline]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       errors="replace", timeout=700)
    out = p.stdout.replace("\r\n", "\n")
    print(out)
    print(p.stderr, file=sys.stderr)
    return out, p


# The guest side of test_linux_finds_the_pci_devices_through_acpi, run by the plain_boot
# fixture (no double quotes: the kernel command line groups words with them).  Lists the
# PCI functions with their IRQ, turns on pci_irq.c's debug messages, enables every
# function through sysfs -- which makes Linux route its INTx through ACPI
# (pci_enable_device -> acpi_pci_irq_enable -> _PRT) -- shows the Linux IRQ each got with its chip, hardware IRQ (the I/O APIC pin: the GSI, GSI
# base 0) and trigger, and what the kernel logged about PCI and ACPI.
PCI_SCRIPT = ("cd /sys/bus/pci/devices; "
              "for d in *; do echo PCIDEV $d $(cat $d/vendor) $(cat $d/device) $(cat $d/irq); done; "
              "echo file drivers/acpi/pci_irq.c +p > /proc/dynamic_debug/control; "
              "for d in *; do echo 1 > $d/enable; i=$(cat $d/irq); "
              "echo PCIIRQ $d $i $(cd /sys/kernel/irq/$i 2>/dev/null && cat chip_name hwirq type); done; "
              "echo ROOT=$(readlink /sys/devices/pci0000:00/firmware_node); "
              "dmesg | grep -iE 'pci|acpi|gsi'")


@pytest.fixture(scope="module")
def plain_boot(linux_guest) -> tuple[str, subprocess.CompletedProcess]:
    """One plain 1-vCPU boot (no --xen) that both tests below read: it runs a few
    commands, then PCI_SCRIPT, and reboots (a Linux boot costs minutes in the nested host,
    so the two share it)."""
    script = ("echo UNAME=$(uname -r); echo CPUS=$(grep -c ^processor /proc/cpuinfo); "
              "grep -m1 ^flags /proc/cpuinfo; echo ANSWER=$((6*7)); cat /proc/cmdline; " + PCI_SCRIPT)
    cmdline = (f"console=ttyS0 quiet reboot=k panic=-1 "
               f'linuxguest.end=reboot -- sh -c "{script}"')
    return boot_linux(linux_guest, cmdline, "--cpus", "1", "--xen-platform-device", "--pci-testdev")


def test_plain_linux_boot_runs_a_command(plain_boot):
    info = packages.kernel_info()
    out, p = plain_boot
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




def test_linux_finds_the_pci_devices_through_acpi(plain_boot):
    """With the DSDT's \\_SB_.PCI0 (vmm/boot/acpi.py) Linux enumerates bus 0 through
    configuration mechanism #1 (no MCFG) and routes INTx by the _PRT's hardwired GSIs."""
    out, p = plain_boot
    assert "linuxguest: exit status 0" in out and p.returncode == GUEST_RESET, p.stderr

    # the root bridge came from the DSDT, with our _CRS; config space through 0xCF8
    assert "ACPI: PCI Root Bridge [PCI0] (domain 0000 [bus 00])" in out
    assert re.search(r"^ROOT=.*/PNP0A03:00$", out, re.M), "pci0000:00 has no ACPI companion"
    assert "PCI: Using configuration type 1 for base access" in out
    assert "MMCONFIG for domain" not in out            # no MCFG: no ECAM
    for window in ("io  0x0000-0x0cf7 window", "io  0x0d00-0xffff window",
                   "mem 0xc0000000-0xfebfffff window", "bus 00"):
        assert re.search(rf"pci_bus 0000:00: root bus resource \[{re.escape(window)}", out), window

    devices = {m[0]: (int(m[1], 16), int(m[2], 16), int(m[3]))
               for m in re.findall(r"^PCIDEV (\S+) (0x[0-9a-f]+) (0x[0-9a-f]+) (\d+)$", out, re.M)}
    assert devices.get("0000:00:00.0", (0, 0, 0))[:2] == (0x8086, 0x1237), devices
    xen = [bdf for bdf, (vendor, _, _) in devices.items() if vendor == 0x5853]
    testdev = [bdf for bdf, (vendor, device, _) in devices.items() if (vendor, device) == (0x1B36, 0x0005)]
    assert len(xen) == 1 and len(testdev) == 1, devices
    # Before pci_enable_device the irq file holds the interrupt-line register (which
    # devices/pci.py fills with the GSI); after it, the Linux IRQ ACPI mapped the _PRT's GSI
    # to.  With the legacy PIC (a full ACPI platform) the first I/O APIC's domain is
    # IOAPIC_DOMAIN_LEGACY: IRQ = GSI below 16, dynamic above, so for GSIs 16-19 the IRQ
    # need not be the GSI; its hwirq is.
    # "PCIIRQ <bdf> <irq> [<chip_name> <hwirq> <type>]"
    irqs = {f[1]: f[2:] for f in (line.split() for line in out.splitlines()) if f[:1] == ["PCIIRQ"]}
    assert irqs["0000:00:00.0"][0] == "0"                 # the host bridge has no INTx pin
    for bdf in xen + testdev:
        slot = int(bdf.split(":")[2].split(".")[0], 16)
        gsi = 16 + slot % 4                                # INTA: what the _PRT says
        assert devices[bdf][2] == gsi                      # interrupt line, before enabling
        # acpi_pci_irq_enable found the device in the _PRT: a hardwired GSI, no link device
        assert f"pci {bdf}: Found [A] _PRT entry" in out
        m = re.search(rf"pci {re.escape(bdf)}: PCI INT A -> GSI (\d+) \(level, low\) -> IRQ (\d+)$", out, re.M)
        assert m and int(m[1]) == gsi, (bdf, m and m[0])
        irq, chip, hwirq, trigger = irqs[bdf]
        assert irq == m[2] and (chip, int(hwirq), trigger) == ("IO-APIC", gsi, "level"), (bdf, irqs[bdf])
    assert "no GSI" not in out


def _boot_until(linux_guest, cmdline: str, marker: str, *args: str, ready_s: float = 600, end_s: float = 300):
    """`vmm run` the Linux guest, wait for ``marker`` on its console as a line of its own
    (init echoes the command, marker included, on its "run:" line: CI's SIGTERM once came
    from that echo, and the poweroff raced the script's output), send SIGTERM;
    (console text, exit code, stderr)."""
    import os
    import select
    import signal
    import time
    line = re.compile(rb"^" + re.escape(marker.encode()) + rb"\r?$", re.M)
    cmd = [sys.executable, "-m", "vmm", "run", "--kernel", str(packages.kernel_info().bzimage),
           "--initrd", str(linux_guest), "--memory", "512M", "--timeout", "900", *args, "--cmdline", cmdline]
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = b""
    try:
        deadline = time.monotonic() + ready_s
        while not line.search(out) and time.monotonic() < deadline and p.poll() is None:
            if select.select([p.stdout], [], [], 0.5)[0]:
                out += os.read(p.stdout.fileno(), 65536)
        if line.search(out):
            p.send_signal(signal.SIGTERM)
        rest, err = p.communicate(timeout=end_s)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    text = (out + rest).decode(errors="replace").replace("\r\n", "\n")
    print(text)
    print(err.decode(errors="replace"), file=sys.stderr)
    return text, p.returncode, err.decode(errors="replace")


# What the guest shows of its Xen platform services: the FIFO/2-level choice, xenbus (the
# balloon driver's target comes from xenstore's memory/target through a watch), and the
# console it runs on.  (dmesg holds the kernel command line, which holds this script: lines
# with "ERRORS=" are ours, not the kernel's.)
# `dmesg -n 1` first: the kernel's messages share the console and can land inside a line we
# parse (CI once read "XENBUS-ERRORS=0[   23.398783] r..."); dmesg's buffer still has them.
SERVICES_SCRIPT = ("dmesg -n 1; echo CONSOLE=$(cat /sys/class/tty/console/active); "
                   "echo TARGET_KB=$(cat /sys/devices/system/xen_memory/xen_memory0/target_kb); "
                   "echo XENBUS-ERRORS=$(dmesg | grep -v ERRORS= | grep -ciE 'xenbus.*(fail|err)'); "
                   "dmesg | grep -E 'xen:events|xenbus|hvc|xen:balloon'; "
                   "echo SERVICES-READY; sleep 600")


def test_linux_xen_services_pv_console_xenstore_fifo_and_sigterm(linux_guest):
    """`vmm run --xen` with `console=hvc0` only: Linux's whole console is the PV console
    ring (xen/pv_console.py); xenbus connects to our xenstore (the balloon driver reads
    memory/target through it); events use the FIFO ABI (xen/evtchn_fifo.py; `--xen-fifo on`:
    with KVM's acceleration the default offers 2-level only), timers and IPIs on 2 vCPUs too.  SIGTERM
    writes control/shutdown = poweroff: Linux's shutdown watch runs /sbin/poweroff and
    the guest powers off (exit 0)."""
    cmdline = f'console=hvc0 quiet panic=-1 -- sh -c "{SERVICES_SCRIPT}"'
    out, code, err = _boot_until(linux_guest, cmdline, "SERVICES-READY", "--xen", "--cpus", "2",
                                 "--serial", "none", "--xen-fifo", "on")
    assert "linuxguest: up, kernel" in out, err[-3000:]
    assert re.search(r"^CONSOLE=hvc0$", out, re.M), out[-3000:]
    assert "xen:events: Using FIFO-based ABI" in out
    assert re.search(r"^XENBUS-ERRORS=0$", out, re.M), out[-3000:]
    assert re.search(r"^TARGET_KB=(\d+)$", out, re.M) and int(re.search(r"^TARGET_KB=(\d+)$", out, re.M)[1]) > 0
    assert "linuxguest: poweroff requested" in out, out[-3000:]
    assert code == 0, (code, err[-3000:])
    assert "internal error" not in err


def test_linux_interactive_shell_on_hvc0(linux_guest):
    """The shell on `console=hvc0` reads what is typed (the VMM's stdin goes into the PV
    console's in ring) and answers through the out ring; on 2-level events (`--xen-no-fifo`)
    and *without* KVM's Xen acceleration (`--xen-no-kvm-accel`: every event, timer and
    upcall is the VMM's) xenbus comes up as well, with no error in dmesg.  (The services
    test above covers xenbus with the acceleration.)  Linux registers vCPU 0's upcall
    vector before it enables its LAPIC, with an event pending: the VMM holds the vector
    KVM's LAPIC refused until it is taken (xen/upcall.py), or no upcall ever arrives."""
    typed = (b"dmesg -n 1; echo PV-INPUT-$((6*7)); echo XENBUS-ERRORS=$(dmesg | grep -v ERRORS= | grep -ciE 'xenbus.*(fail|err)'); "
             b"echo TARGET_KB=$(cat /sys/devices/system/xen_memory/xen_memory0/target_kb); "
             b"dmesg | grep -E 'xen:events'\nexit\n")
    cmd = [sys.executable, "-m", "vmm", "run", "--kernel", str(packages.kernel_info().bzimage),
           "--initrd", str(linux_guest), "--memory", "512M", "--timeout", "600", "--serial", "none",
           "--xen", "--cpus", "2", "--xen-no-fifo", "--xen-no-kvm-accel", "--xen-console", "pv",
           "--cmdline", "console=hvc0 quiet panic=-1"]
    p = subprocess.run(cmd, input=typed, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=700)
    out = p.stdout.decode(errors="replace").replace("\r\n", "\n")
    err = p.stderr.decode(errors="replace")
    print(out)
    print(err, file=sys.stderr)
    assert "starting a shell" in out, err[-3000:]
    assert re.search(r"^PV-INPUT-42$", out, re.M), out[-3000:]
    assert re.search(r"^XENBUS-ERRORS=0$", out, re.M), out[-3000:]
    assert re.search(r"^TARGET_KB=[1-9]\d*$", out, re.M), out[-3000:]
    assert "xen:events: Using 2-level ABI" in out
    assert "linuxguest: exit status 0" in out
    assert p.returncode == 0, (p.returncode, err[-3000:])
    assert "internal error" not in err
