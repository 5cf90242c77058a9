"""QEMU's Xen guest matrix (tests/functional/test_x86_64_kvm_xen.py) on our VMM.

Debian's kernel boots with `vmm run --xen`, 2 vCPUs, a virtio-blk disk and a
virtio-rng (virtio 1.x on the modern PCI transport, MSI-X), and the kernel command
line of each variant decides how its interrupts arrive:

1. default                          virtio MSI-X vectors on ``xen-pirq -msi-x`` (2-level
                                    events, delivered by KVM), the UART and the SCI on xen-pirq
2. ``pci=nomsi``                    virtio INTx on ``xen-pirq -ioapic-level`` (FIFO events,
                                    ``--xen-fifo on``: delivered by the VMM)
3. ``noapic pci=nomsi``             virtio INTx on ``xen-pirq``
4. ``--xen-apic-virt`` (CPUID)      virtio on native ``PCI-MSI``, the ACPI SCI on ``xen-pirq``
5. ``xen_no_vector_callback``       the callback is xen-platform-pci's INTx: ``fasteoi``
6. ... ``pci=nomsi``                ... on the ``IO-APIC``
7. ... ``noapic``                   ... on the 8259: ``XT-PIC``

Each variant also shows in dmesg the Xen version we announce, the event-channel ABI
and (1-4) the callback vector; its clock runs at the right rate and tells the
host's time; it reads the disk's first sector, writes a pattern that the test finds
in the backing file, reads the RNG, and pings the host over virtio-net (a tap in a
network namespace of the test host) while the host pings it.  The same kernel and devices also boot
without ``--xen`` as a plain KVM guest, on 1 and 2 vCPUs.  No timing hints
(tsc_early_khz) anywhere: the guest calibrates against our PIT.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass

import pytest

from tests.nested.test_linux_boot import GUEST_RESET, boot_linux
from vmm.testhost import packages

pytestmark = pytest.mark.xen_kvm

# One kernel argument (the kernel groups "double quotes"; no double quotes inside).
# `dmesg -n 1` first: kernel messages on the console could land inside the lines we parse.
SCRIPT = ("dmesg -n 1; echo IRQS-BEGIN; cat /proc/interrupts; echo IRQS-END; "
          "echo CPUS=$(grep -c ^processor /proc/cpuinfo) "
          "CLOCKSOURCE=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource); "
          "dmesg | grep -E 'Xen version|callback vector|xen:events|Hypervisor detected|Grant table|"
          "xen-platform-pci|rtc_cmos'; "
          "T0=$(cut -d. -f1 /proc/uptime); sleep 3; T1=$(cut -d. -f1 /proc/uptime); "
          "echo SLEPT=$((T1-T0)) NOW=$(date +%s); "
          "echo SECTOR0=$(head -c 16 /dev/vda); "
          "echo WRITTEN-{tag} | dd of=/dev/vda bs=512 seek=1 conv=fsync 2>/dev/null && echo WRITE-OK; "
          "echo RNG=$(head -c 16 /dev/hwrng | od -An -tx1 | tr -d ' '); "
          "ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && "
          "ping -c 2 -W 5 10.0.2.2 >/dev/null && echo GUEST-PING-OK; sleep 4; "
          "echo IRQS2-BEGIN; cat /proc/interrupts; echo IRQS2-END")


@dataclass(frozen=True)
class Variant:
    name: str
    cmdline: str            # the variant's kernel arguments
    args: tuple = ()        # extra `vmm run` options
    vector_callback: bool = True


# Every variant runs in `make test`; those marked linux_e2e also in `make test-linux-e2e`.
# Variant 1 also carries the checks of the Xen HVM boot and of the GSIs as PIRQs that
# test_linux_boot.py had.
E2E = pytest.mark.linux_e2e
VARIANTS = [
    Variant("1-default", "", ("--stats",)),
    Variant("2-nomsi", "pci=nomsi", ("--xen-fifo", "on")),
    Variant("3-noapic-nomsi", "noapic pci=nomsi"),
    Variant("4-apic-virt", "", ("--xen-apic-virt",)),
    Variant("5-novector", "xen_no_vector_callback", vector_callback=False),
    Variant("6-novector-nomsi", "xen_no_vector_callback pci=nomsi", vector_callback=False),
    Variant("7-novector-noapic", "xen_no_vector_callback noapic", vector_callback=False),
]


def section(out: str, begin: str, end: str) -> str:
    """The lines between the marker lines ``begin`` and ``end`` (not the script's own text,
    which init echoes on its "run:" line)."""
    m = re.search(rf"^{begin}$(.*?)^{end}$", out, re.M | re.S)
    assert m, f"no {begin} ... {end} in the console output:\n{out[-3000:]}"
    return m[1]


def interrupts(out: str, begin: str = "IRQS-BEGIN", end: str = "IRQS-END") -> dict[str, tuple[int, str]]:
    """/proc/interrupts between the markers: device name -> (total count, the rest of the line:
    chip and flow).  Lines look like ``37:  0  7  xen-pirq  -msi-x  virtio1-req.0``."""
    text = section(out, begin, end)
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^\s*\w+:\s+((?:\d+\s+)+)(.*\S)\s+(\S+)\s*$", line)
        if m:
            rows[m[3].strip()] = (sum(int(n) for n in m[1].split()), m[2])
    return rows


def virtio_rows(rows: dict) -> dict:
    return {name: v for name, v in rows.items() if name.startswith("virtio")}


HOST_IP, GUEST_IP, TAP = "10.0.2.2", "10.0.2.15", "vmmtap0"

# ICMP echo to argv[1] every 0.5 s until a reply comes back or argv[2] seconds pass (no
# ping(8) on the test host): prints PING-REPLY and exits 0 on the first reply.
PING = r"""
import os, socket, struct, sys, time
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(0.5)
ident, deadline, seq = os.getpid() & 0xffff, time.monotonic() + float(sys.argv[2]), 0
while time.monotonic() < deadline:
    seq += 1
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"vmm-matrix"
    body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
    try:
        s.sendto(body, (sys.argv[1], 0))
        while True:
            pkt, addr = s.recvfrom(2048)
            icmp = pkt[(pkt[0] & 15) * 4:]
            if addr[0] == sys.argv[1] and icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident:
                print("PING-REPLY", seq); sys.exit(0)
    except (socket.timeout, OSError):
        pass
sys.exit(1)
"""


class GuestNet:
    """A network namespace with a tap at HOST_IP for the guest's virtio-net, and a ping
    of the guest from that namespace while it runs."""

    def __init__(self, ns: str):
        self.ns = ns
        self.wrap = ("ip", "netns", "exec", ns)
        self.ping_out = ""

    def sh(self, *cmd: str, check: bool = True) -> str:
        return subprocess.run([*self.wrap, *cmd], check=check, capture_output=True, text=True,
                              timeout=60).stdout

    def ping_guest_meanwhile(self, seconds: float) -> threading.Thread:
        def run():
            p = subprocess.run([*self.wrap, sys.executable, "-c", PING, GUEST_IP, str(seconds)],
                               capture_output=True, text=True, timeout=seconds + 60)
            self.ping_out = p.stdout + p.stderr
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t


@pytest.fixture
def net():
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun") or not shutil.which("ip"):
        pytest.fail("the nested host must give root, /dev/net/tun and ip(8) for virtio-net", pytrace=False)
    ns = f"vmm-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=60)
    g = GuestNet(ns)
    try:
        g.sh("ip", "tuntap", "add", "dev", TAP, "mode", "tap")
        g.sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", TAP)
        g.sh("ip", "link", "set", TAP, "up")
        yield g
    finally:
        g.sh("ip", "link", "del", TAP, check=False)
        subprocess.run(["ip", "netns", "del", ns], timeout=60)


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(b"DISK-SECTOR-ZERO" + bytes(4 * 1024 * 1024 - 16))
    return path


def boot_with_devices(linux_guest, disk, net, cmdline: str, *args: str):
    """Boot with the disk, an RNG and virtio-net on the namespace's tap, while the
    namespace pings the guest."""
    pinger = net.ping_guest_meanwhile(600)
    out, p = boot_linux(linux_guest, cmdline, *args, "--drive", f"path={disk}", "--virtio-rng",
                        "--net", f"tap={TAP}", wrap=net.wrap)
    pinger.join(timeout=90)
    return out, p


def check_common(out: str, p, disk, tag: str, started: float, xen: bool, cpus: int, net=None) -> None:
    assert "linuxguest: up, kernel " + packages.kernel_info().abi in out, out[-3000:]
    assert "linuxguest: exit status 0" in out and p.returncode == GUEST_RESET, p.stderr[-3000:]
    assert re.search(rf"^CPUS={cpus} CLOCKSOURCE=\S+$", out, re.M), out[-3000:]
    assert "internal error" not in p.stderr and "Traceback" not in p.stderr, p.stderr[-3000:]
    # The clock: `sleep 3` took at least 3 s of guest uptime (2 with the second boundaries; up
    # to 15 with the forks of a slow nested host: 6 seen), and the guest's wallclock, set at
    # boot and advanced by the guest's clock since, is the host's: over a 2-3 minute boot a
    # clock running at a wrong rate would be off by far more than the window's 5 s.
    m = re.search(r"^SLEPT=(\d+) NOW=(\d+)$", out, re.M)
    assert m, out[-3000:]
    assert 2 <= int(m[1]) <= 15, f"sleep 3 took {m[1]} s of guest uptime"
    assert started - 5 <= int(m[2]) <= time.time() + 5, (m[2], started, time.time())
    # virtio-blk: the first sector as the test wrote it, the guest's write in the file
    assert re.search(r"^SECTOR0=DISK-SECTOR-ZERO$", out, re.M), out[-3000:]
    assert re.search(r"^WRITE-OK$", out, re.M), out[-3000:]
    assert disk.read_bytes()[512:512 + len(f"WRITTEN-{tag}")] == f"WRITTEN-{tag}".encode()
    # virtio-rng
    rng = re.search(r"^RNG=([0-9a-f]{32})$", out, re.M)
    assert rng and len(set(rng[1])) > 2, out[-3000:]
    # virtio-net: the guest pinged the host's tap, and the host pinged the guest
    assert re.search(r"^GUEST-PING-OK$", out, re.M), out[-3000:]
    if net is not None:
        assert "PING-REPLY" in net.ping_out, f"the guest never answered the host's ping: {net.ping_out}"
    if xen:
        assert "Hypervisor detected: Xen HVM" in out
        assert re.search(r"Xen version 4\.17", out), "dmesg does not show the Xen version we announce"
        assert re.search(r"xen:events: Using (FIFO-based|2-level) ABI", out)


def assert_counted(before: dict, after: dict, names, where: str) -> None:
    """Each of ``names`` took interrupts (but a virtio config vector: no config changes), and
    more of them after the disk and RNG I/O."""
    names = [n for n in names if not n.endswith("-config")]
    assert names, f"no {where} interrupt line"
    for n in names:
        assert after[n][0] > 0, f"{n} ({where}) took no interrupt: {after[n]}"
    assert sum(after[n][0] for n in names) > sum(before.get(n, (0, ""))[0] for n in names), \
        f"no {where} interrupt during the disk and RNG I/O"


def assert_callback_delivers(after: dict, platform: dict, listing: str) -> None:
    """Without the vector callback every event comes through xen-platform-pci's interrupt
    (the disk and RNG don't: they are on MSI-X): it fired more than once, and xenbus's
    events, which only it carries, arrived (a callback line that fires once and never
    again -- a level pin whose EOI is lost -- leaves xenbus at 0 and waiting)."""
    assert all(r[0] >= 2 for r in platform.values()), listing
    assert after.get("xenbus", (0, ""))[0] > 0, listing


@pytest.mark.parametrize("v", [pytest.param(v, id=v.name, marks=() if v.name == "1-default" else E2E)
                               for v in VARIANTS])
def test_xen_pirq_matrix(linux_guest, disk, net, v: Variant):
    tag = v.name.split("-")[0]
    cmdline = (f"console=ttyS0 quiet reboot=k panic=-1 {v.cmdline} linuxguest.end=reboot "
               f'-- sh -c "{SCRIPT.format(tag=tag)}"')
    started = time.time()
    out, p = boot_with_devices(linux_guest, disk, net, cmdline, "--xen", "--cpus", "2", *v.args)
    check_common(out, p, disk, tag, started, xen=True, cpus=2, net=net)
    if v.vector_callback:
        assert "Xen HVM callback vector for event delivery is enabled" in out
    else:
        assert "callback vector for event delivery is enabled" not in out
    before, after = interrupts(out), interrupts(out, "IRQS2-BEGIN", "IRQS2-END")
    vio = virtio_rows(after)
    platform = {n: r for n, r in after.items() if "xen-platform-pci" in n}
    listing = section(out, "IRQS2-BEGIN", "IRQS2-END")
    if v.name == "1-default":
        assert vio and all(re.search(r"xen-pirq\s*-msi", r[1]) for r in vio.values()), listing
        assert_counted(before, after, vio, "xen-pirq-msi(-x)")
        # The default with KVM's acceleration: 2-level events (--xen-fifo auto), which KVM
        # delivers (PIRQ MSIs through KVM_IRQ_ROUTING_XEN_EVTCHN routes).  Linux takes itself
        # for an HVM guest (it sees the CMOS RTC), runs on the Xen clocksource and places its
        # grant frames in the platform device's BAR; ACPI's GSIs (the UART's IRQ 4, the SCI)
        # became PIRQs (acpi_register_gsi_xen_hvm -> PHYSDEVOP_map_pirq, EVTCHNOP_bind_pirq).
        assert "xen:events: Using 2-level ABI" in out
        assert "Booting paravirtualized kernel on Xen HVM" in out or "Hypervisor detected: Xen HVM" in out
        assert re.search(r"CLOCKSOURCE=xen$", out, re.M), "the Xen clocksource is not in use"
        assert "Grant table initialized" in out and "grant table add_to_physmap failed" not in out
        assert not re.search(r"xen-platform-pci: probe of \S+ failed", out)
        assert "rtc_cmos" in out and "registered as rtc0" in out
        assert "ttyS0" in after and re.search(r"xen-pirq\s*\d*-ioapic-edge", after["ttyS0"][1]), listing
        assert after["ttyS0"][0] > 0, "no serial interrupt arrived as a PIRQ"
        assert "acpi" in after and "xen-pirq" in after["acpi"][1], listing       # the SCI
        assert re.search(r"hcall:physdev_op\s+\d+", p.stderr), p.stderr[-2000:]
        # Exits avoided: KVM answers the IPIs' EVTCHNOP_send (xen/kvm_evtchn.py) and runs the
        # singleshot timers (xen/kvm_timer.py), so far fewer event-channel exits than IPIs
        # received and almost no vcpu_op exits (a 2-vCPU boot: ~700 IPIs, ~2000 timer events).
        exits = {m[1]: int(m[2]) for m in re.finditer(r"^\s+hcall:(\w+)\s+(\d+)$", p.stderr, re.M)}
        ipis = sum(r[0] for n, r in after.items() if re.fullmatch(r"(resched|callfunc|callfuncsingle)\d+", n))
        timer = sum(r[0] for n, r in after.items() if re.fullmatch(r"timer\d+", n))
        assert ipis > 100 and exits.get("event_channel_op", 0) < ipis / 2, (ipis, exits)
        assert timer > 100 and exits.get("vcpu_op", 0) < 50 and "set_timer_op" not in exits, (timer, exits)
    elif v.name == "2-nomsi":
        assert "xen:events: Using FIFO-based ABI" in out      # --xen-fifo on: the VMM delivers
        assert vio and all(re.search(r"xen-pirq\s*\d*-ioapic-level", r[1]) for r in vio.values()), listing
        assert_counted(before, after, vio, "xen-pirq-ioapic-level")
    elif v.name == "3-noapic-nomsi":
        assert vio and all("xen-pirq" in r[1] for r in vio.values()), listing
        assert_counted(before, after, vio, "xen-pirq")
    elif v.name == "4-apic-virt":
        assert vio and all("PCI-MSI" in r[1] for r in vio.values()), listing
        assert_counted(before, after, vio, "PCI-MSI")
        assert "acpi" in after and "xen-pirq" in after["acpi"][1], listing
    elif v.name == "5-novector":
        assert platform and all("fasteoi" in r[1] for r in platform.values()), listing
        assert_callback_delivers(after, platform, listing)
    elif v.name == "6-novector-nomsi":
        assert platform and all("IO-APIC" in r[1] for r in platform.values()), listing
        assert_callback_delivers(after, platform, listing)
    elif v.name == "7-novector-noapic":
        assert platform and all("XT-PIC" in r[1] for r in platform.values()), listing
        assert_callback_delivers(after, platform, listing)


@E2E
@pytest.mark.parametrize("cpus", [1, 2])
def test_plain_kvm_guest_with_the_same_devices(linux_guest, disk, net, cpus: int):
    """No --xen: the same kernel and devices as a plain KVM guest; virtio on native MSI-X."""
    tag = f"plain{cpus}"
    cmdline = (f"console=ttyS0 quiet reboot=k panic=-1 linuxguest.end=reboot "
               f'-- sh -c "{SCRIPT.format(tag=tag)}"')
    started = time.time()
    out, p = boot_with_devices(linux_guest, disk, net, cmdline, "--cpus", str(cpus))
    check_common(out, p, disk, tag, started, xen=False, cpus=cpus, net=net)
    assert "Hypervisor detected: Xen" not in out
    before, after = interrupts(out), interrupts(out, "IRQS2-BEGIN", "IRQS2-END")
    vio = virtio_rows(after)
    assert vio and all("PCI-MSI" in r[1] for r in vio.values()), section(out, "IRQS2-BEGIN", "IRQS2-END")
    assert_counted(before, after, vio, "PCI-MSI")
