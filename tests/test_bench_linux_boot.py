"""bench/linux_boot.py without booting anything: the command lines of each VMM, the console
parsers, and the QEMU backport's cache (with stand-ins for apt-get and apt-cache: no network)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vmm.cli import build_parser, spec_from_args

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_linux_boot", ROOT / "bench" / "linux_boot.py")
lb = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = lb          # dataclasses look their module up
_spec.loader.exec_module(lb)

KERNEL, INITRD = "/boot/vmlinuz-6.1.0-99-amd64", "/cache/linux-guest/initramfs.cpio"


def fake_build(root: Path) -> lb.QemuBuild:
    return lb.QemuBuild(root, "1:10.0.2+ds-2~bpo12+1")


def opt(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_guest_cmdline_has_no_timing_hints_and_a_computed_marker():
    verbose, quiet = lb.guest_cmdline(False), lb.guest_cmdline(True)
    assert verbose == 'console=ttyS0 panic=-1 -- sh -c "echo BENCH-INIT-$((40+2))"'
    assert quiet == 'console=ttyS0 quiet panic=-1 -- sh -c "echo BENCH-INIT-$((40+2))"'
    for c in (verbose, quiet, lb.guest_cmdline(True, lb.blk_command())):
        assert "tsc" not in c and lb.MARKER not in c and lb.BLK_DONE not in c
        assert c.count('"') == 2           # the kernel groups words with double quotes only


@pytest.mark.parametrize("vmm", ["ours", "ours-xen"])
@pytest.mark.parametrize("cfg", [lb.Config(1, False), lb.Config(2, True), lb.Config(1, True, blk=True)])
def test_our_command_is_what_vmm_run_parses(vmm, cfg):
    setup = lb.Setup(KERNEL, INITRD, blk_file="/tmp/disk.img", python="/venv/bin/python")
    argv, env = setup.command(vmm, cfg)
    assert argv[:4] == ["/venv/bin/python", "-m", "vmm", "run"]
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)     # this checkout's vmm
    args = build_parser().parse_args(argv[3:])
    spec = spec_from_args(args)
    assert (spec.kernel, spec.initrd, spec.memory, spec.cpus) == (KERNEL, INITRD, 512 << 20, cfg.cpus)
    assert spec.serial == "stdio"
    assert (spec.xen is not None) == (vmm == "ours-xen")
    assert spec.drives == ([{"path": "/tmp/disk.img", "readonly": True}] if cfg.blk else [])
    assert spec.cmdline == lb.guest_cmdline(cfg.quiet, lb.blk_command() if cfg.blk else lb.BOOT_CMD)


def test_qemu_commands_per_machine(tmp_path):
    setup = lb.Setup(KERNEL, INITRD, qemu_xen=fake_build(tmp_path / "q10"), blk_file="/tmp/disk.img")
    cfg = lb.Config(2, True)
    for vmm in ("microvm", "q35", "qemu-xen"):
        argv, env = setup.command(vmm, cfg)
        # the same guest everywhere
        assert (opt(argv, "-kernel"), opt(argv, "-initrd"), opt(argv, "-m"), opt(argv, "-smp")) == \
            (KERNEL, INITRD, "512M", "2")
        assert opt(argv, "-append") == lb.guest_cmdline(True)
        assert opt(argv, "-serial") == "stdio" and opt(argv, "-cpu") == "host"
        assert "-nodefaults" in argv and "-no-reboot" in argv and "-drive" not in argv
    micro, _ = setup.command("microvm", cfg)
    assert micro[0] == lb.QEMU7 and opt(micro, "-accel") == "kvm"
    assert opt(micro, "-M").split(",")[0] == "microvm" and "isa-serial=on" in opt(micro, "-M")
    q35, _ = setup.command("q35", cfg)
    assert q35[0] == lb.QEMU7 and opt(q35, "-M") == "q35" and "-L" not in q35
    xen, env = setup.command("qemu-xen", cfg)
    assert xen[0] == str(tmp_path / "q10/usr/bin/qemu-system-x86_64") and opt(xen, "-M") == "pc"
    assert opt(xen, "-accel") == "kvm,xen-version=0x40011,kernel-irqchip=split"
    assert [xen[i + 1] for i, a in enumerate(xen) if a == "-L"] == \
        [str(tmp_path / "q10/usr/share/qemu"), str(tmp_path / "q10/usr/share/seabios")]
    assert "LD_LIBRARY_PATH" not in env or str(tmp_path) not in env["LD_LIBRARY_PATH"]
    (tmp_path / "q10/usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    assert setup.qemu_xen.env({})["LD_LIBRARY_PATH"] == str(tmp_path / "q10/usr/lib/x86_64-linux-gnu")
    blk, _ = setup.command("q35", lb.Config(1, True, blk=True))
    assert opt(blk, "-drive") == "file=/tmp/disk.img,format=raw,if=none,id=bench0,readonly=on"
    assert opt(blk, "-device") == "virtio-blk-pci,drive=bench0"
    with pytest.raises(ValueError):
        setup.command("microvm", lb.Config(1, True, blk=True))     # no virtio_mmio in the initramfs
    with pytest.raises(lb.BenchError, match="--prepare"):
        lb.Setup(KERNEL, INITRD).command("qemu-xen", cfg)


# A verbose boot: the marker's text must not match inside the kernel's echo of its command
# line nor init's "run:" line, only as a line of its own (serial lines end in CR LF).
VERBOSE = (b"[    0.000000] Linux version 6.1.0-99-amd64\r\n"
           b'[    0.000000] Command line: console=ttyS0 panic=-1 -- sh -c "echo BENCH-INIT-42"\r\n'
           b"linuxguest: up, kernel 6.1.0-99-amd64\r\n"
           b"linuxguest: run: sh -c echo BENCH-INIT-42\r\n"
           b"BENCH-INIT-42\r\n"
           b"linuxguest: exit status 0\r\n")


def test_find_line_only_matches_whole_lines():
    end = lb.find_line(VERBOSE, lb.MARKER)
    assert VERBOSE[:end].endswith(b"run: sh -c echo BENCH-INIT-42\r\nBENCH-INIT-42\r\n")
    assert lb.find_line(VERBOSE[:end - 2], lb.MARKER) == -1       # not until its line ends
    assert lb.find_line(VERBOSE, lb.MARKER, VERBOSE.index(b"linuxguest: up")) == end
    assert lb.find_line(b"xBENCH-INIT-42\n", lb.MARKER) == -1
    assert lb.find_line(b"BENCH-INIT-42\n", lb.MARKER) == 14
    assert lb.find_line(b"BENCH-INIT-423\n", lb.MARKER) == -1


def test_boot_times_to_the_marker_and_kills_the_rest(tmp_path):
    script = ("import sys, time; w = sys.stdout.buffer.write; "
              "w(b'Command line: echo BENCH-INIT-42\\r\\nBENCH-INIT-'); sys.stdout.flush(); time.sleep(0.3); "
              "w(b'42\\r\\n'); sys.stdout.flush(); time.sleep(60)")
    r = lb.boot([sys.executable, "-c", script], dict(os.environ), timeout=20)
    assert r.ok and 0.3 <= r.seconds < 10, r
    assert r.code != 0                         # killed, not waited for
    r = lb.boot([sys.executable, "-c", "print('no marker'); import sys; sys.exit(3)"], dict(os.environ), timeout=20)
    assert not r.ok and r.code == 3 and "no marker" in r.out


# blk_command()'s output as busybox prints it (adjtimex: usec, STA_UNSYNC).
BLK_OUT = """BENCH-INIT-42
MARK 4k0
    status:       64 (UNSYNC)
    time.tv_sec:  1000
    time.tv_usec: 500000
4096+0 records in
4096+0 records out
MARK 4k1
    status:       64 (UNSYNC)
    time.tv_sec:  1002
    time.tv_usec: 500000
128+0 records in
128+0 records out
MARK seq1
    status:       64 (UNSYNC)
    time.tv_sec:  1003
    time.tv_usec: 0
BENCH-BLK-42
"""


def test_parse_blk():
    r = lb.parse_blk(BLK_OUT, 128 << 20, count=4096)
    assert r["iops"] == pytest.approx(4096 / 2.0)
    assert r["seq_mbs"] == pytest.approx((128 << 20) / 0.5 / 1e6)
    nano = BLK_OUT.replace("64 (UNSYNC)", "8256 (UNSYNC NANO)").replace("500000", "500000000")
    assert lb.parse_blk(nano, 128 << 20, count=4096)["iops"] == pytest.approx(2048)
    assert "error" in lb.parse_blk(BLK_OUT.split("MARK seq1")[0], 128 << 20)
    # the kernel's echo of the command line holds "MARK 4k0" mid-line: not a mark
    assert lb.parse_blk("Command line: ... echo MARK 4k0; adjtimex\n" + BLK_OUT, 128 << 20)["iops"] == \
        pytest.approx(2048)


# --- the QEMU backport's cache -------------------------------------------------------------

FAKE_QEMU = """#!/bin/sh
case "$1" in
  --version) echo "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2~bpo12+1)";;
  -M) printf 'Supported machines are:\\nmicrovm              microvm (i386)\\npc                   Standard PC\\n';;
esac
"""


def _deb(tmp: Path, name: str, files: dict[str, str]) -> Path:
    d = tmp / f"src-{name}"
    (d / "DEBIAN").mkdir(parents=True)
    (d / "DEBIAN" / "control").write_text(f"Package: {name}\nVersion: 1:10.0.2+ds-2~bpo12+1\n"
                                          "Architecture: all\nMaintainer: t <t@t>\nDescription: t\n")
    for path, text in files.items():
        f = d / path
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
        f.chmod(0o755)
    out = tmp / "debs" / f"{name}_10.0.2+ds-2~bpo12+1_all.deb"
    out.parent.mkdir(exist_ok=True)
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(d), str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    return out


@pytest.fixture
def fake_apt(tmp_path, monkeypatch):
    """apt-get / apt-cache stand-ins on PATH: `download` copies prebuilt .debs, `update`
    fails when $FAKE_APT_FAIL is set; every call is logged with its arguments."""
    if not shutil.which("dpkg-deb") or not shutil.which("dpkg"):
        pytest.skip("dpkg-deb/dpkg not installed")
    _deb(tmp_path, "qemu-system-x86", {"usr/bin/qemu-system-x86_64": FAKE_QEMU})
    _deb(tmp_path, "qemu-system-data", {"usr/share/qemu/linuxboot_dma.bin": "rom"})
    _deb(tmp_path, "seabios", {"usr/share/seabios/bios-256k.bin": "bios"})
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    log = tmp_path / "apt.log"
    (bin_ / "apt-get").write_text(
        "#!/bin/sh\n"
        f'echo "apt-get $*" >> {log}\n'
        'for a; do case "$a" in\n'
        '  update) [ -n "$FAKE_APT_FAIL" ] && { echo "E: Failed to fetch InRelease  Could not resolve host" >&2; exit 100; }; exit 0;;\n'
        f'  download) cp {tmp_path}/debs/*.deb .; exit 0;;\n'
        "esac; done\n")
    (bin_ / "apt-cache").write_text(
        "#!/bin/sh\n" f'echo "apt-cache $*" >> {log}\n' 'echo "Package: qemu-system-x86"; echo "Version: 1:10.0.2+ds-2~bpo12+1"\n')
    for f in bin_.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}:{os.environ['PATH']}")
    return log


def test_backports_download_unpack_and_cache(tmp_path, fake_apt):
    cache = tmp_path / "cache"
    assert lb.cached_qemu_backports(cache) is None
    with pytest.raises(lb.BenchError, match=r"not in .*qemu-backports: run `python bench/linux_boot.py --prepare`"):
        lb.ensure_qemu_backports(cache, download=False)
    assert not fake_apt.exists()                                     # offline: apt never asked

    build = lb.ensure_qemu_backports(cache, log=lambda m: None)
    root = cache / "qemu-backports" / "10.0.2+ds-2~bpo12+1"           # no epoch in the path
    assert build.root == root and build.version == "1:10.0.2+ds-2~bpo12+1"
    assert build.binary == root / "usr/bin/qemu-system-x86_64"
    assert (root / "usr/share/qemu/linuxboot_dma.bin").exists() and (root / "usr/share/seabios/bios-256k.bin").exists()
    assert json.loads((cache / "qemu-backports/current.json").read_text())["dir"] == root.name
    assert lb.check_qemu(build).startswith("QEMU emulator version 10.0.2")
    calls = fake_apt.read_text().splitlines()
    assert [c.split()[0] + " " + c.split()[-1] for c in calls] == \
        ["apt-get update", "apt-cache qemu-system-x86", "apt-get seabios"]
    # a private apt state under the cache; only backports in its sources.list
    assert f"Dir::State::Lists={cache}/qemu-backports/apt/lists" in calls[0]
    assert f"Dir::Etc::SourceList={cache}/qemu-backports/apt/sources.list" in calls[0]
    assert "bookworm-backports main" in (cache / "qemu-backports/apt/sources.list").read_text()

    fake_apt.unlink()                                                # idempotent: no apt the second time
    assert lb.ensure_qemu_backports(cache, download=False) == build
    assert lb.ensure_qemu_backports(cache) == build and not fake_apt.exists()


def test_backports_network_failure_is_one_line(tmp_path, fake_apt, monkeypatch):
    monkeypatch.setenv("FAKE_APT_FAIL", "1")
    with pytest.raises(lb.BenchError) as e:
        lb.ensure_qemu_backports(tmp_path / "cache", log=lambda m: None)
    msg = str(e.value)
    assert "\n" not in msg and "apt-get update of bookworm-backports" in msg and "Could not resolve host" in msg
    assert lb.cached_qemu_backports(tmp_path / "cache") is None


def test_main_says_what_is_missing_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VMM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("VMM_TESTHOST", "1")           # as inside the nested host: no download
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"")
    assert lb.main(["--anywhere", "--kernel", str(kernel), "--initrd", str(kernel), "--pairs", "xen"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--prepare" in err
    assert lb.main(["--anywhere", "--kernel", str(kernel), "--initrd", str(tmp_path / "none"), "--pairs", "q35"]) == 2
    assert "initrd" in capsys.readouterr().err
    assert lb.main(["--pairs", "bogus"]) == 2
    assert lb.main(["--prepare"]) == 2                 # never inside the nested host
    assert "host" in capsys.readouterr().err


class FakeSetup(lb.Setup):
    """Every "VMM" is a Python one-liner printing canned console output."""

    def __init__(self, fail: str = ""):
        super().__init__(KERNEL, INITRD, qemu_xen=fake_build(Path("/nonexistent")))
        self.fail, self.calls = fail, []

    def command(self, vmm, cfg):
        self.calls.append((vmm, cfg))
        text = BLK_OUT if cfg.blk else VERBOSE.decode()
        if vmm == self.fail:
            text = "Kernel panic - not syncing\n"
        if vmm.startswith("ours") and cfg.blk:       # ours: 4k reads twice as slow as QEMU's
            text = text.replace("time.tv_sec:  1002", "time.tv_sec:  1004").replace("1003", "1005")
        return [sys.executable, "-c", f"import sys; sys.stdout.write({text!r})"], dict(os.environ)


def _run(setup, pairs, configs, reps=2):
    args = type("Args", (), {"reps": reps, "timeout": 20, "blk_mib": 128})()
    return lb.run(args, setup, pairs, configs)


def test_run_interleaves_and_prints_the_table(capsys):
    setup = FakeSetup()
    configs = [lb.Config(1, False), lb.Config(2, True)]
    assert _run(setup, ["microvm", "q35", "xen", "blk"], configs) == 0
    out = capsys.readouterr().out
    # every VMM once per configuration and repetition, ours shared by microvm and q35
    per_rep = [(v, c) for c in configs for v in ("ours", "microvm", "q35", "ours-xen", "qemu-xen")]
    assert sorted(setup.calls, key=str) == sorted((per_rep + [("ours", lb.Config(1, True, True)),
                                                              ("q35", lb.Config(1, True, True))]) * 2, key=str)
    # the order rotates between repetitions
    assert setup.calls[0][0] != setup.calls[len(setup.calls) // 2][0]
    for name in ("ours vs QEMU microvm, 1 vCPU verbose", "ours vs QEMU q35, 2 vCPUs quiet",
                 "ours --xen vs QEMU pc, Xen, 2 vCPUs quiet"):
        assert name in out
    assert "sequential, dd bs=1M" in out and "4 KiB O_DIRECT QD1" in out
    iops = next(line for line in out.splitlines() if "O_DIRECT" in line).split()
    assert iops[-2] == "0.50"                       # ours/QEMU IOPS: the fake reads took 4 s vs 2 s
    assert "failed" not in out


def test_run_reports_a_failed_boot_and_exits_1(capsys):
    assert _run(FakeSetup(fail="q35"), ["microvm", "q35"], [lb.Config(1, True)], reps=1) == 1
    cap = capsys.readouterr()
    assert "q35 1 vCPU quiet failed" in cap.err and "Kernel panic" in cap.err
    assert "ours vs QEMU q35, 1 vCPU quiet" in cap.out and "failed" in cap.out
    assert "ours vs QEMU microvm, 1 vCPU quiet" in cap.out


def test_main_refuses_a_kvm_without_xen(monkeypatch, capsys):
    from vmm.testhost import pytest_tier
    monkeypatch.setattr(pytest_tier, "host_xen_kvm", lambda: (False, "KVM_CAP_XEN_HVM = 0"))
    assert lb.main(["--pairs", "q35"]) == 2
    assert "vmm testhost run" in capsys.readouterr().err
