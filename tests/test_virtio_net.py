"""virtio-net on a real tap (devices/virtio/net.py), driven by the virtio_net kit guest on
/dev/kvm.  Each test gets a network namespace of its own holding a persistent tap (vt0,
192.168.76.1/24, IPv6 off so the kernel says nothing unasked); the VMM runs inside it
(`ip netns exec`), and the namespace and tap are deleted afterwards.  Needs root (or
CAP_NET_ADMIN and CAP_SYS_ADMIN), /dev/net/tun and `ip`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from conftest import ROOT, run_vmm
from test_cli_errors import assert_user_error
from test_guests import assert_pass

TAP = "vt0"
HOST_IP = "192.168.76.1"
GUEST_MAC = "52:54:00:12:34:56"


class NetNs:
    def __init__(self, name: str):
        self.name = name
        self.wrap = ("ip", "netns", "exec", name)

    def sh(self, *cmd: str, check: bool = True) -> str:
        return subprocess.run([*self.wrap, *cmd], check=check, capture_output=True, text=True, timeout=30).stdout

    def stat(self, what: str) -> int:
        return int(self.sh("cat", f"/sys/class/net/{TAP}/statistics/{what}"))


@pytest.fixture
def netns():
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun") or not shutil.which("ip"):
        pytest.skip("needs root, /dev/net/tun and ip(8)")
    name = f"vmmtest-{uuid.uuid4().hex[:10]}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    ns = NetNs(name)
    try:
        ns.sh("ip", "tuntap", "add", "dev", TAP, "mode", "tap")
        ns.sh("sysctl", "-qw", f"net.ipv6.conf.{TAP}.disable_ipv6=1")
        ns.sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", TAP)
        ns.sh("ip", "link", "set", TAP, "up")
        yield ns
    finally:
        ns.sh("ip", "link", "del", TAP, check=False)
        subprocess.run(["ip", "netns", "del", name], timeout=30)


CAPTURE = r"""
import select, socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))       # ETH_P_ALL
s.bind((sys.argv[1], 0))
print("ready", flush=True)
while True:
    ready = select.select([s, sys.stdin], [], [], 120)[0]
    if sys.stdin in ready or not ready:
        break
    data, addr = s.recvfrom(70000)
    if addr[2] != socket.PACKET_OUTGOING:
        print(data.hex(), flush=True)
"""


class Capture:
    """Frames the tap hands the host's stack (what the guest sent), seen by a raw socket."""

    def __init__(self, ns: NetNs):
        self.p = subprocess.Popen([*ns.wrap, sys.executable, "-c", CAPTURE, TAP], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert self.p.stdout.readline() == "ready\n"

    def frames(self) -> list[bytes]:
        out, _ = self.p.communicate("", timeout=30)
        return [bytes.fromhex(line) for line in out.split()]


@pytest.mark.parametrize("mode", ["mrg", "nomrg"])
def test_virtio_net_arp_and_ping_through_a_tap(netns, guest, mode):
    cap = Capture(netns)
    r = run_vmm("run", "--kernel", guest("virtio_net"), "--net", f"tap={TAP},mac={GUEST_MAC}", "--timeout", "90",
                "--cmdline", "nomrg" if mode == "nomrg" else "", "--trace", "virtio_net.*", wrap=netns.wrap)
    frames = cap.frames()
    out, err = r.out, r.err
    host_mac = netns.sh("cat", f"/sys/class/net/{TAP}/address").strip()
    # The guest: its MAC and link from the device configuration, the host's replies.
    assert f"virtio_net: MAC {GUEST_MAC}, status 0x1 (link up)" in out, out + err[-3000:]
    arp_bufs, ping_bufs = (2, 4) if mode == "mrg" else (1, 1)     # 32-byte buffers: 12 + 42, 12 + 98
    assert f"ARP reply: {HOST_IP} is at {host_mac} (42 bytes in {arp_bufs} buffers)" in out
    assert f"ICMP echo reply from {HOST_IP}: 98 bytes in {ping_bufs} buffers" in out
    assert_pass(r)
    # The device: two frames each way, the rx ones in as many buffers.
    assert err.count("virtio_net.tx") == 2 and "len=42 result=sent" in err and "len=98 result=sent" in err
    assert f"len=42 bufs={arp_bufs} result=received" in err and f"len=98 bufs={ping_bufs} result=received" in err
    assert "dropped" not in err
    # The host: exactly the guest's two frames came in on the tap, as the guest built them.
    assert netns.stat("rx_packets") == 2 and netns.stat("tx_packets") >= 2
    mac, guest_ip, host_ip = bytes.fromhex(GUEST_MAC.replace(":", "")), bytes([192, 168, 76, 2]), \
        bytes([192, 168, 76, 1])
    assert len(frames) == 2, [f.hex() for f in frames]
    arp, ping = frames
    assert arp[:6] == b"\xff" * 6 and arp[6:12] == mac and arp[12:14] == b"\x08\x06" and len(arp) == 42
    assert arp[20:22] == b"\x00\x01" and arp[22:28] == mac and arp[28:32] == guest_ip and arp[38:42] == host_ip
    assert ping[:6] == bytes.fromhex(host_mac.replace(":", "")) and ping[6:12] == mac and len(ping) == 98
    assert ping[12:14] == b"\x08\x00" and ping[23] == 1 and ping[26:30] == guest_ip and ping[30:34] == host_ip
    assert ping[34] == 8                                       # ICMP echo request


FLOOD = r"""
import socket, sys, time
tap, dst, secs = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", "")), float(sys.argv[3])
src = bytes.fromhex(open(f"/sys/class/net/{tap}/address").read().strip().replace(":", ""))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((tap, 0))
frame = dst + src + b"\x88\xb5" + b"\x5a" * 1000
sent, end = 0, time.monotonic() + secs
while time.monotonic() < end:
    for _ in range(200):
        try:
            s.send(frame)
            sent += 1
        except OSError:
            pass
print(sent)
"""


def _rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _cpu_s(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")    # utime + stime


def test_virtio_net_flood_without_receive_buffers(netns, guest):
    """The guest posts no receive buffers while the host floods the tap: the device stops
    reading it (the kernel drops), the VMM neither grows nor spins, and once buffers come
    the frames flow again; the run ends cleanly."""
    cmd = [*netns.wrap, sys.executable, "-m", "vmm", "run", "--kernel", guest("virtio_net"), "--net",
           f"tap={TAP},mac={GUEST_MAC}", "--cmdline", "flood", "--timeout", "100", "--trace", "virtio_net.rx_pause"]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    out = b""
    try:
        deadline = time.monotonic() + 60
        while b"no receive buffers posted" not in out and time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            out += line
        assert b"no receive buffers posted" in out, out
        time.sleep(0.5)
        rss0, cpu0, t0 = _rss_kib(p.pid), _cpu_s(p.pid), time.monotonic()
        flood = subprocess.run([*netns.wrap, sys.executable, "-c", FLOOD, TAP, GUEST_MAC, "3"],
                               capture_output=True, text=True, timeout=60, check=True)
        sent = int(flood.stdout)
        rss1, cpu1, t1 = _rss_kib(p.pid), _cpu_s(p.pid), time.monotonic()
        assert p.poll() is None                                   # still running
        dropped = netns.stat("tx_dropped")                        # the tap's queue overflowed
        assert sent > 2000 and dropped > 1000, (sent, dropped)
        assert rss1 - rss0 < 8 << 10, (rss0, rss1)                # < 8 MiB for ~MBs flooded at it
        assert cpu1 - cpu0 < 0.5 * (t1 - t0), (cpu1 - cpu0, t1 - t0)   # not polling a readable tap
        p.stdin.write(b"go\n")
        p.stdin.flush()
        rest, err = p.communicate(timeout=100)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    out = (out + rest).decode(errors="replace")
    err = err.decode(errors="replace")
    assert "vmm: internal error" not in err, err[-4000:]
    assert "buffers posted: 8 flood frames of 1014 bytes received" in out, out + err[-3000:]
    assert f"ARP reply: {HOST_IP} is at" in out
    assert p.returncode == 0 and "PASS" in out, (p.returncode, out, err[-3000:])
    assert "state=paused reason=no receive buffers" in err and "state=resumed reason=receiveq notified" in err


def test_virtio_net_snapshot_restore_on_the_same_tap(netns, guest, tmp_path):
    """The flood guest snapshotted while it has no receive buffers (the device's receive
    paused), restored in a new process that reopens the tap by name: frames flooded at the
    restored VMM wait in the tap until the guest posts buffers, then arrive; the ARP and
    ping exchanges go through (transmit too), and the guest ends well."""
    from test_snapshot import RunningVmm
    vm = RunningVmm(tmp_path, "--kernel", guest("virtio_net"), "--net", f"tap={TAP},mac={GUEST_MAC}",
                    "--cmdline", "flood", wrap=netns.wrap)
    snap = tmp_path / "net.snap"
    vm.snapshot_and_end(snap, lambda: vm.wait_output("no receive buffers posted"))
    cmd = [*netns.wrap, sys.executable, "-m", "vmm", "restore", "--from", str(snap), "--timeout", "100",
           "--trace", "virtio_net.rx_pause"]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30                         # the tap has a reader again
        while netns.sh("cat", f"/sys/class/net/{TAP}/carrier", check=False).strip() != "1":
            assert p.poll() is None and time.monotonic() < deadline, p.communicate()
            time.sleep(0.1)
        subprocess.run([*netns.wrap, sys.executable, "-c", FLOOD, TAP, GUEST_MAC, "0.5"], capture_output=True,
                       timeout=60, check=True)
        out, err = p.communicate(b"go\n", timeout=100)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    out, err = out.decode(errors="replace"), err.decode(errors="replace")
    assert "vmm: internal error" not in err, err[-4000:]
    assert p.returncode == 0 and "PASS" in out.splitlines(), (p.returncode, out, err[-3000:])
    assert "virtio_net: virtio-net on a tap" not in out                     # no second boot
    assert "buffers posted: 8 flood frames of 1014 bytes received" in out and f"ARP reply: {HOST_IP} is at" in out
    assert "state=resumed reason=receiveq notified" in err


@pytest.mark.parametrize("net,needles", [
    (f"mac={GUEST_MAC}", ("--net: no tap=NAME",)),
    ("tap=vt0,mac=52:54:00:12:34", ("--net: bad MAC address '52:54:00:12:34'",)),
    ("tap=vt0,mac=01:00:5e:00:00:01", ("--net: MAC address 01:00:5e:00:00:01 is a multicast address",)),
    ("tap=vt0,queues=4", ("--net: unknown option 'queues=4'",)),
    ("tap=vt0,vhost", ("--net: unknown option 'vhost'",)),
    ("tap=", ("--net: tap= needs a value",)),
    ("tap=a/b", ("--net: 'a/b' is not an interface name",)),
    ("tap=averyveryverylongname", ("--net: tap name 'averyveryverylongname' is longer than 15 bytes",)),
    ("tap=lo", ("--net: cannot open tap lo: Invalid argument", "not a tap")),
])
def test_net_bad_input(vmm, guest, net, needles):
    assert_user_error(vmm("run", "--kernel", guest("hello"), "--net", net), *needles)


def test_net_tap_held_by_another_process(netns, guest):
    """A single-queue tap another process has open: EBUSY, one line, exit 2."""
    holder = subprocess.Popen([*netns.wrap, sys.executable, "-c",
                               "import sys; from devices.virtio.tap import open_tap; open_tap(sys.argv[1]); "
                               "print('open', flush=True); sys.stdin.read()", TAP],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
    try:
        assert holder.stdout.readline() == b"open\n"
        r = run_vmm("run", "--kernel", guest("hello"), "--net", f"tap={TAP}", wrap=netns.wrap)
        assert_user_error(r, f"--net: cannot open tap {TAP}: Device or resource busy")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_net_needs_pci(vmm, guest):
    assert_user_error(vmm("run", "--kernel", guest("hello"), "--no-pci", "--net", "tap=vt0"), "need the PCI bus")


def test_net_tap_without_permission(guest):
    """Making a tap needs CAP_NET_ADMIN: without it, EPERM, one line, exit 2 (and no tap left)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv(1) to drop CAP_NET_ADMIN")
    name = f"vtp{uuid.uuid4().hex[:8]}"
    r = run_vmm("run", "--kernel", guest("hello"), "--net", f"tap={name}",
                wrap=("setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin"))
    assert_user_error(r, f"--net: cannot open tap {name}: Operation not permitted", "ip tuntap add")
    assert not os.path.exists(f"/sys/class/net/{name}")
