"""Linux boot to its first init command, and virtio-blk reads: ours vs QEMU, same run.

Debian's packaged kernel (/boot/vmlinuz-<abi>) with the `make linux-guest` initramfs
(guest-images/linux/init) boots with 512M and 1 or 2 vCPUs; the command after `--` on the
kernel command line prints BENCH-INIT-42 (computed in the guest, so the kernel's echo of its
command line never matches).  We time each VMM process from its start to that line on the
serial console, then kill it.  Pairs, each a ratio ours/QEMU (lower is faster for us):

* microvm  `vmm run` vs QEMU `-M microvm` (isa-serial, PIC, PIT, RTC), the host's QEMU 7.2;
* q35      `vmm run` vs QEMU `-M q35` (SeaBIOS), the host's QEMU 7.2;
* xen      `vmm run --xen` vs QEMU's own Xen HVM emulation (`-M pc -accel
           kvm,xen-version=0x40011,kernel-irqchip=split`), which needs QEMU >= 8: Debian
           bookworm-backports' qemu-system-x86, unpacked (never installed) into
           ${VMM_CACHE_DIR:-~/.cache/vmm}/qemu-backports/<version>/;
* blk      one 1-vCPU quiet boot each with the same file as a read-only virtio-blk disk (ours
           over modern PCI, QEMU q35's virtio-blk-pci); the guest times, with `adjtimex`, a
           buffered 1 MiB `dd` of the whole disk (MB/s) and 4 KiB O_DIRECT reads at queue depth
           1 (IOPS).  Busybox has no random-offset reader, so those 4 KiB reads go at sequential
           offsets: the file is in the host's page cache, so they measure the request round
           trip, not a seek.  Ratios ours/QEMU here: higher is faster for us.

Each configuration (vCPUs x console: `verbose` = console=ttyS0, `quiet` = console=ttyS0 quiet;
no timing hints such as tsc_early_khz) runs every VMM once per repetition, interleaved, in a
rotating order; we print the medians, the median of the per-repetition ratios and their range.

It needs a KVM with Xen, so it runs in the nested test host, whose / is the host's, read-only
under a tmpfs overlay: the cache can't be filled from inside (nor is there a network).
Prepare it on the host first, then run it nested (`make bench-linux` does both):

  python bench/linux_boot.py --prepare                  # on the host: QEMU backports + initramfs
  vmm testhost run --timeout 3600 -- .venv/bin/python bench/linux_boot.py [--reps 3]
      [--cpus 1,2] [--console verbose,quiet] [--pairs microvm,q35,xen,blk] [--blk-mib 128]
      [--qemu-cpu host]     # (where /dev/kvm has no Xen it refuses to run, unless --anywhere)

Exit status: 0 with the table; 1 when a boot failed (its output's tail is on stderr);
2 when something is missing (one line saying what).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vmm.testhost.config import TesthostError, cache_root, linux_guest_dir  # noqa: E402

QEMU7 = "/usr/bin/qemu-system-x86_64"
MEMORY = "512M"
XEN_VERSION = 0x40011              # Xen 4.17: `vmm run --xen`'s default --xen-version
MARKER = "BENCH-INIT-42"
BLK_DONE = "BENCH-BLK-42"
BOOT_CMD = 'sh -c "echo BENCH-INIT-$((40+2))"'
BLK_4K_COUNT = 4096

# The Debian suite and packages of QEMU's Xen emulation: the emulator, its data (option
# ROMs: linuxboot_dma.bin, kvmvapic.bin) and the SeaBIOS its Depends asks for.
BACKPORTS_SUITE = "bookworm-backports"
BACKPORTS_MIRROR = "http://deb.debian.org/debian"
BACKPORTS_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
BACKPORTS_PACKAGES = ("qemu-system-x86", "qemu-system-data", "seabios")
QEMU_XEN_MIN_MAJOR = 8

# What each pair compares: (ours, QEMU).
PAIRS = {"microvm": ("ours", "microvm"), "q35": ("ours", "q35"), "xen": ("ours-xen", "qemu-xen")}


class BenchError(Exception):
    """Something the bench needs is missing: one line for the user."""


# --- QEMU >= 8 from bookworm-backports, unpacked into the cache -------------------------

@dataclass(frozen=True)
class QemuBuild:
    """An unpacked QEMU: run ``binary`` with ``firmware_args()`` and ``env()``."""
    root: Path
    version: str

    @property
    def binary(self) -> Path:
        return self.root / "usr" / "bin" / "qemu-system-x86_64"

    def firmware_args(self) -> list[str]:
        # -L dirs are searched before the compiled-in /usr/share/qemu:/usr/share/seabios
        return ["-L", str(self.root / "usr/share/qemu"), "-L", str(self.root / "usr/share/seabios")]

    def env(self, base: dict | None = None) -> dict:
        env = dict(os.environ if base is None else base)
        libdir = self.root / "usr/lib/x86_64-linux-gnu"
        if libdir.is_dir():          # libraries the backport needs newer than the host's
            env["LD_LIBRARY_PATH"] = ":".join(filter(None, [str(libdir), env.get("LD_LIBRARY_PATH")]))
        return env


def backports_dir(cache: Path | None = None) -> Path:
    return (cache or cache_root()) / "qemu-backports"


def _version_dir(version: str) -> str:
    """``1:10.0.2+ds-2~bpo12+1`` -> ``10.0.2+ds-2~bpo12+1`` (no epoch in a path)."""
    return version.split(":", 1)[-1]


def cached_qemu_backports(cache: Path | None = None) -> QemuBuild | None:
    base = backports_dir(cache)
    try:
        stamp = json.loads((base / "current.json").read_text())
        build = QemuBuild(base / stamp["dir"], stamp["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return build if build.binary.is_file() and (build.root / ".complete").exists() else None


def apt_options(base: Path) -> list[str]:
    """apt-get/apt-cache options for a private state: only the backports suite, lists and
    downloads under ``base``; the host's apt and dpkg state are only read."""
    opts = [f"Dir::Etc::SourceList={base / 'apt' / 'sources.list'}", "Dir::Etc::SourceParts=/dev/null",
            f"Dir::State::Lists={base / 'apt' / 'lists'}", f"Dir::Cache={base / 'apt' / 'cache'}",
            "APT::Get::List-Cleanup=0"]
    if os.geteuid() == 0:
        opts.append("APT::Sandbox::User=root")    # _apt can't write into root's cache
    return [a for o in opts for a in ("-o", o)]


def _run_step(what: str, cmd: list[str], **kw) -> str:
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    except OSError as e:
        raise BenchError(f"qemu-backports: {what}: {e}") from None
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
        raise BenchError(f"qemu-backports: {what} failed: {last}")
    return p.stdout


def ensure_qemu_backports(cache: Path | None = None, *, download: bool = True, log=print) -> QemuBuild:
    """QEMU >= 8 with its firmware, unpacked under ``<cache>/qemu-backports/<version>/``.

    Idempotent: a complete unpacked tree is reused without touching the network.  Otherwise
    (``download``) a private apt state fetches ``BACKPORTS_PACKAGES`` (`apt-get download`,
    signatures checked against Debian's keyring) and `dpkg -x` unpacks them.  Raises
    BenchError with one line when that can't be done."""
    found = cached_qemu_backports(cache)
    if found:
        return found
    base = backports_dir(cache)
    if not download:
        raise BenchError(f"QEMU >= {QEMU_XEN_MIN_MAJOR} for the xen pair is not in {base}: "
                         "run `python bench/linux_boot.py --prepare` on the host first")
    for tool in ("apt-get", "apt-cache", "dpkg"):
        if not shutil.which(tool):
            raise BenchError(f"qemu-backports: {tool} not found: this needs a Debian (apt) host")
    if not Path(BACKPORTS_KEYRING).exists():
        raise BenchError(f"qemu-backports: {BACKPORTS_KEYRING} is missing (debian-archive-keyring)")
    apt = base / "apt"
    for d in (apt / "lists" / "partial", apt / "cache" / "archives" / "partial", base / "debs"):
        d.mkdir(parents=True, exist_ok=True)
    (apt / "sources.list").write_text(
        f"deb [signed-by={BACKPORTS_KEYRING}] {BACKPORTS_MIRROR} {BACKPORTS_SUITE} main\n")
    opts = apt_options(base)
    log(f"qemu-backports: apt-get update ({BACKPORTS_SUITE} only, state in {apt})")
    _run_step(f"apt-get update of {BACKPORTS_SUITE} (network down or mirror unreachable?)",
              ["apt-get", *opts, "update"])
    show = _run_step("apt-cache show qemu-system-x86",
                     ["apt-cache", *opts, "show", "--no-all-versions", "qemu-system-x86"])
    m = re.search(r"^Version:\s*(\S+)", show, re.M)
    if not m:
        raise BenchError(f"qemu-backports: no qemu-system-x86 in {BACKPORTS_SUITE}")
    version = m.group(1)
    major = int(re.match(r"(?:\d+:)?(\d+)", version).group(1))
    if major < QEMU_XEN_MIN_MAJOR:
        raise BenchError(f"qemu-backports: {BACKPORTS_SUITE} has QEMU {version}; "
                         f"the xen pair needs >= {QEMU_XEN_MIN_MAJOR}")
    debs = base / "debs" / _version_dir(version)
    debs.mkdir(parents=True, exist_ok=True)
    log(f"qemu-backports: apt-get download {' '.join(BACKPORTS_PACKAGES)} ({version})")
    _run_step("apt-get download", ["apt-get", *opts, "download", *BACKPORTS_PACKAGES], cwd=debs)
    files = sorted(debs.glob("*.deb"))
    names = {f.name.split("_", 1)[0] for f in files}
    if missing := [p for p in BACKPORTS_PACKAGES if p not in names]:
        raise BenchError(f"qemu-backports: apt-get download left no .deb for {', '.join(missing)}")
    root = base / _version_dir(version)
    tmp = base / (root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for f in files:
        _run_step(f"dpkg -x {f.name}", ["dpkg", "-x", str(f), str(tmp)])
    build = QemuBuild(tmp, version)
    check_qemu(build)
    (tmp / ".complete").write_text(json.dumps({"version": version, "debs": [f.name for f in files]}) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    (base / "current.json").write_text(json.dumps({"dir": root.name, "version": version}) + "\n")
    log(f"qemu-backports: {root / 'usr/bin/qemu-system-x86_64'}")
    return QemuBuild(root, version)


def check_qemu(build: QemuBuild) -> str:
    """The unpacked binary runs (its libraries resolve) and has the pc machine; its version line."""
    if not build.binary.is_file():
        raise BenchError(f"qemu-backports: {build.binary} is missing from the unpacked packages")
    out = _run_step(f"{build.binary} --version", [str(build.binary), "--version"], env=build.env())
    machines = _run_step(f"{build.binary} -M help", [str(build.binary), "-M", "help"], env=build.env())
    if not re.search(r"^pc\s", machines, re.M):
        raise BenchError(f"qemu-backports: {build.binary} has no pc machine")
    return out.splitlines()[0]


# --- command lines -------------------------------------------------------------------------

@dataclass(frozen=True)
class Config:
    cpus: int
    quiet: bool
    blk: bool = False

    @property
    def label(self) -> str:
        return f"{self.cpus} vCPU{'s' if self.cpus > 1 else ''} {'quiet' if self.quiet else 'verbose'}"


def guest_cmdline(quiet: bool, command: str = BOOT_CMD) -> str:
    """The same for every VMM: a serial console, no timing hints; panic=-1 ends a panicked
    guest at once (QEMU -no-reboot exits, `vmm run` ends on the reset)."""
    return " ".join(["console=ttyS0", *(["quiet"] if quiet else []), "panic=-1", "--", command])


def blk_command(count: int = BLK_4K_COUNT) -> str:
    """The blk guest command: the boot marker, then ``adjtimex`` timestamps around 4 KiB
    O_DIRECT reads (QD1) and a buffered 1 MiB read of the whole disk (no double quotes:
    the kernel groups words with them)."""
    stamp = "adjtimex | grep -E 'status|tv_'"
    return ('sh -c "echo BENCH-INIT-$((40+2)); '
            f"echo MARK 4k0; {stamp}; dd if=/dev/vda of=/dev/null bs=4k count={count} iflag=direct; "
            f"echo MARK 4k1; {stamp}; dd if=/dev/vda of=/dev/null bs=1M; "
            f"echo MARK seq1; {stamp}; "
            'echo BENCH-BLK-$((40+2))"')


def ours_command(kernel: str, initrd: str, cmdline: str, cpus: int, *, xen: bool = False,
                 drive: str | None = None, python: str = sys.executable) -> list[str]:
    return [python, "-m", "vmm", "run", "--kernel", kernel, "--initrd", initrd, "--memory", MEMORY,
            "--cpus", str(cpus), "--serial", "stdio", "--timeout", "3600",
            *(["--xen"] if xen else []), *(["--drive", f"path={drive},readonly"] if drive else []),
            "--cmdline", cmdline]


def qemu_command(machine: str, kernel: str, initrd: str, cmdline: str, cpus: int, *,
                 drive: str | None = None, qemu: str = QEMU7, firmware: list[str] = (),
                 cpu: str = "host") -> list[str]:
    """``machine``: microvm | q35 | xen (the pc machine with QEMU's Xen HVM emulation)."""
    if machine == "microvm":
        # microvm.rst (7.2): the ISA serial port is our console; PIC, PIT and RTC as a stock
        # kernel expects them (the defaults, spelled out).  No PCI: no virtio-blk-pci here.
        mach, accel = ["-M", "microvm,isa-serial=on,pic=on,pit=on,rtc=on"], "kvm"
    elif machine == "q35":
        mach, accel = ["-M", "q35"], "kvm"
    elif machine == "xen":
        # docs/system/i386/xen.rst: the split irqchip is mandatory; the pc machine (IDE, which
        # Xen's unplug protocol knows) adds the Xen platform device by itself.
        mach, accel = ["-M", "pc"], f"kvm,xen-version={XEN_VERSION:#x},kernel-irqchip=split"
    else:
        raise ValueError(machine)
    disk = []
    if drive:
        if machine == "microvm":
            raise ValueError("the linux-guest initramfs has no virtio_mmio: blk needs a PCI machine")
        disk = ["-drive", f"file={drive},format=raw,if=none,id=bench0,readonly=on",
                "-device", "virtio-blk-pci,drive=bench0"]
    return [qemu, *firmware, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            *mach, "-accel", accel, "-cpu", cpu, "-m", MEMORY, "-smp", str(cpus),
            "-kernel", kernel, "-initrd", initrd, "-append", cmdline, "-serial", "stdio", *disk]


@dataclass
class Setup:
    kernel: str
    initrd: str
    qemu7: str = QEMU7
    qemu_xen: QemuBuild | None = None
    blk_file: str | None = None
    python: str = sys.executable
    qemu_cpu: str = "host"        # what KVM offers, as `vmm run` passes KVM's supported CPUID

    def command(self, vmm: str, cfg: Config) -> tuple[list[str], dict]:
        """(argv, env) of VMM ``vmm`` (ours | ours-xen | microvm | q35 | qemu-xen) for ``cfg``."""
        cmdline = guest_cmdline(cfg.quiet, blk_command() if cfg.blk else BOOT_CMD)
        drive = self.blk_file if cfg.blk else None
        env = dict(os.environ)
        if vmm in ("ours", "ours-xen"):
            # this checkout's vmm, whichever checkout the venv was installed from
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
            return ours_command(self.kernel, self.initrd, cmdline, cfg.cpus, xen=vmm == "ours-xen",
                                drive=drive, python=self.python), env
        if vmm == "qemu-xen":
            if self.qemu_xen is None:
                raise BenchError("the xen pair needs QEMU >= 8: run `python bench/linux_boot.py --prepare`")
            return qemu_command("xen", self.kernel, self.initrd, cmdline, cfg.cpus, drive=drive,
                                qemu=str(self.qemu_xen.binary), firmware=self.qemu_xen.firmware_args(),
                                cpu=self.qemu_cpu), self.qemu_xen.env(env)
        return qemu_command(vmm, self.kernel, self.initrd, cmdline, cfg.cpus, drive=drive, qemu=self.qemu7,
                            cpu=self.qemu_cpu), env


# --- running one boot, reading its console ------------------------------------------------------

def find_line(buf: bytes, line: str, start: int = 0) -> int:
    """Offset just past the first whole console line that is exactly ``line``, or -1;
    ``start`` must be a line's start.  Lines that merely contain it (the kernel's
    "Command line:", init's "run:") don't count."""
    m = re.compile(rb"(?m)^" + re.escape(line.encode()) + rb"\r*\n").search(buf, start)
    return m.end() if m else -1


@dataclass
class Boot:
    seconds: float | None          # process start -> MARKER (None: never seen)
    out: str
    err: str
    code: int | None = None
    blk: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.seconds is not None and (not self.blk or "error" not in self.blk)


def boot(argv: list[str], env: dict, until: str = MARKER, timeout: float = 600) -> Boot:
    """Start ``argv``, time it to the ``MARKER`` line, read on to ``until``, then kill it."""
    with tempfile.TemporaryFile() as errf:
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errf,
                             env=env, cwd=ROOT)
        buf, seconds, scan = b"", None, 0
        try:
            deadline = t0 + timeout
            while time.monotonic() < deadline:
                if select.select([p.stdout], [], [], 0.2)[0]:
                    chunk = os.read(p.stdout.fileno(), 1 << 16)
                    if not chunk:
                        break
                    buf += chunk
                    if seconds is None and find_line(buf, MARKER, scan) >= 0:
                        seconds = time.monotonic() - t0
                    if seconds is not None and find_line(buf, until, scan) >= 0:
                        break
                    scan = buf.rfind(b"\n") + 1     # the whole lines before were searched
                elif p.poll() is not None:
                    break
        finally:
            if p.poll() is None:
                p.kill()
            code = p.wait()
            p.stdout.close()
        errf.seek(0)
        err = errf.read().decode(errors="replace")
    return Boot(seconds, buf.decode(errors="replace").replace("\r\n", "\n"), err, code)


def parse_blk(out: str, size: int, count: int = BLK_4K_COUNT) -> dict:
    """MB/s and IOPS from blk_command()'s output: ``MARK <name>`` lines, each followed by
    busybox adjtimex's status and time.tv_sec/tv_usec (nanoseconds when STA_NANO is set)."""
    stamps: dict[str, float] = {}
    name, sec, status = None, None, 0
    for line in out.splitlines():
        line = line.strip()
        if m := re.fullmatch(r"MARK (\w+)", line):
            name, sec = m.group(1), None
        elif m := re.match(r"status:\s*(\d+)", line):
            status = int(m.group(1))
        elif m := re.match(r"time\.tv_sec:\s*(\d+)", line):
            sec = int(m.group(1))
        elif (m := re.match(r"time\.tv_usec:\s*(\d+)", line)) and name and sec is not None:
            sub = int(m.group(1))
            stamps[name] = sec + sub / (1e9 if status & 0x2000 else 1e6)
    if not {"4k0", "4k1", "seq1"} <= stamps.keys():
        return {"error": f"blk timestamps missing (got {sorted(stamps)})"}
    t4k, tseq = stamps["4k1"] - stamps["4k0"], stamps["seq1"] - stamps["4k1"]
    if t4k <= 0 or tseq <= 0:
        return {"error": f"blk timestamps not increasing: {stamps}"}
    return {"seq_mbs": size / tseq / 1e6, "iops": count / t4k, "seq_s": tseq, "4k_s": t4k}


# --- the run -----------------------------------------------------------------------------------

def ratios(ours: list[float], qemu: list[float]) -> list[float]:
    return [o / q for o, q in zip(ours, qemu)]


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if values else "-"


def prepare(args) -> int:
    """On the host: the QEMU backport (for the xen pair) and the linux-guest initramfs."""
    from vmm.testhost import initramfs, packages
    if os.environ.get("VMM_TESTHOST"):
        raise BenchError("--prepare runs on the host: inside the nested test host / is read-only")
    build = ensure_qemu_backports()
    print(f"qemu-backports: {check_qemu(build)} at {build.binary}")
    info = packages.kernel_info()
    out = linux_guest_dir(info.abi) / "initramfs.cpio"
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"linux-guest: {initramfs.build_linux_guest(info.modules_dir, out)} (kernel {info.bzimage})")
    return 0


def default_setup(args, pairs: list[str]) -> Setup:
    from vmm.testhost import packages
    if args.kernel and args.initrd:
        kernel, initrd = args.kernel, args.initrd
    else:
        info = packages.kernel_info()
        kernel = args.kernel or str(info.bzimage)
        initrd = args.initrd or str(linux_guest_dir(info.abi) / "initramfs.cpio")
    for what, path in (("kernel", kernel), ("initrd", initrd)):
        if not Path(path).is_file():
            raise BenchError(f"{what} {path} is missing: run `python bench/linux_boot.py --prepare` on the host")
    if not Path(args.qemu).is_file():
        raise BenchError(f"{args.qemu} is missing: install qemu-system-x86 (make testhost-prepare)")
    qemu_xen = None
    if "xen" in pairs:
        # Inside the nested host only the cache can serve it (read-only, no network).
        qemu_xen = ensure_qemu_backports(download=not os.environ.get("VMM_TESTHOST"),
                                         log=lambda m: print(m, file=sys.stderr))
    return Setup(kernel, initrd, qemu7=args.qemu, qemu_xen=qemu_xen, qemu_cpu=args.qemu_cpu)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepare", action="store_true", help="on the host: fill the cache, boot nothing")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cpus", default="1,2", help="vCPU counts, comma-separated (default 1,2)")
    ap.add_argument("--console", default="verbose,quiet", help="verbose and/or quiet (default both)")
    ap.add_argument("--pairs", default="microvm,q35,xen,blk", help="which comparisons (default all)")
    ap.add_argument("--blk-mib", type=int, default=128, help="size of the virtio-blk file (default 128)")
    ap.add_argument("--timeout", type=float, default=600, help="per boot, seconds (default 600)")
    ap.add_argument("--kernel", help="default: /boot/vmlinuz-<abi> of linux-image-amd64")
    ap.add_argument("--initrd", help="default: the `make linux-guest` initramfs")
    ap.add_argument("--qemu", default=QEMU7, help=f"QEMU for microvm/q35/blk (default {QEMU7})")
    ap.add_argument("--qemu-cpu", default="host", help="QEMU's -cpu (default host)")
    ap.add_argument("--anywhere", action="store_true", help="run even where /dev/kvm has no Xen")
    args = ap.parse_args(argv)
    try:
        if args.prepare:
            return prepare(args)
        pairs = [p for p in args.pairs.split(",") if p]
        if bad := [p for p in pairs if p not in (*PAIRS, "blk")]:
            raise BenchError(f"--pairs: unknown {', '.join(bad)} (known: {', '.join([*PAIRS, 'blk'])})")
        consoles = [c for c in args.console.split(",") if c]
        if bad := [c for c in consoles if c not in ("verbose", "quiet")]:
            raise BenchError(f"--console: unknown {', '.join(bad)} (verbose, quiet)")
        configs = [Config(int(c), q == "quiet") for c in args.cpus.split(",") if c for q in consoles]
        if not args.anywhere:
            from vmm.testhost.pytest_tier import host_xen_kvm
            has, why = host_xen_kvm()
            if not has:
                raise BenchError(f"this KVM has no Xen ({why}): run it in the nested test host, "
                                 "`vmm testhost run -- .venv/bin/python bench/linux_boot.py` (or --anywhere)")
        setup = default_setup(args, pairs)
        return run(args, setup, pairs, configs)
    except (BenchError, TesthostError) as e:
        print(f"linux_boot: {e}", file=sys.stderr)
        return 2


def run(args, setup: Setup, pairs: list[str], configs: list[Config]) -> int:
    vmms = list(dict.fromkeys(v for p in pairs if p in PAIRS for v in PAIRS[p]))
    times: dict[tuple[str, Config], list[float]] = {}
    blk: dict[str, list[dict]] = {"ours": [], "q35": []}
    failed = 0
    with tempfile.NamedTemporaryFile(prefix="bench-blk-", suffix=".img") as img:
        blk_cfg = Config(1, True, blk=True)
        if "blk" in pairs:
            block = os.urandom(1 << 20)
            for _ in range(args.blk_mib):
                img.write(block)
            img.flush()
            setup.blk_file = img.name
        for rep in range(args.reps):
            for cfg in configs + ([blk_cfg] if "blk" in pairs else []):
                order = vmms if not cfg.blk else ["ours", "q35"]
                k = rep % len(order)
                for vmm in order[k:] + order[:k]:         # rotate: no VMM always goes first
                    argv, env = setup.command(vmm, cfg)
                    r = boot(argv, env, until=BLK_DONE if cfg.blk else MARKER, timeout=args.timeout)
                    if cfg.blk:
                        r.blk = parse_blk(r.out, args.blk_mib << 20) if r.seconds is not None else {}
                    if not r.ok:
                        failed += 1
                        print(f"linux_boot: {vmm} {cfg.label}{' blk' if cfg.blk else ''} failed "
                              f"(exit {r.code}, {r.blk.get('error', 'no ' + MARKER)}); console and stderr tails:\n"
                              f"{r.out[-2000:]}\n{r.err[-2000:]}", file=sys.stderr)
                        continue
                    print(f"  rep {rep + 1} {vmm:9} {cfg.label:17}{' blk' if cfg.blk else '    '} "
                          f"{r.seconds:7.2f} s", file=sys.stderr, flush=True)
                    if cfg.blk:
                        blk[vmm].append(r.blk)
                    else:
                        times.setdefault((vmm, cfg), []).append(r.seconds)
    report(args, setup, pairs, configs, times, blk)
    return 1 if failed else 0


LABELS = {"ours": "ours", "ours-xen": "ours --xen", "microvm": "QEMU microvm", "q35": "QEMU q35",
          "qemu-xen": "QEMU pc, Xen"}


def report(args, setup: Setup, pairs, configs, times, blk) -> None:
    qx = f"; Xen pair: QEMU {_version_dir(setup.qemu_xen.version)}" if setup.qemu_xen else ""
    print(f"Linux boot to its first init command ({Path(setup.kernel).name}, {MEMORY}), median of "
          f"{args.reps}, interleaved; ratio = ours/QEMU time (lower: we are faster){qx}:")
    print(f"  {'variant':44} {'ours s':>8} {'QEMU s':>8} {'ratio':>7}  range")
    for pair in (p for p in pairs if p in PAIRS):
        ours, theirs = PAIRS[pair]
        for cfg in configs:
            o, q = times.get((ours, cfg), []), times.get((theirs, cfg), [])
            name = f"{LABELS[ours]} vs {LABELS[theirs]}, {cfg.label}"
            if not o or not q:
                print(f"  {name:44} {'failed':>8}")
                continue
            # per-repetition ratios when every repetition of both booted, else of the medians
            rs = ratios(o, q) if len(o) == len(q) else [statistics.median(o) / statistics.median(q)]
            print(f"  {name:44} {statistics.median(o):8.2f} {statistics.median(q):8.2f} "
                  f"{statistics.median(rs):7.2f}  {spread(rs)}")
    if "blk" in pairs:
        print(f"virtio-blk reads of a {args.blk_mib} MiB file, read-only (QEMU q35: virtio-blk-pci), 1 vCPU, "
              "timed in the guest; ratio = ours/QEMU rate (higher: we are faster):")
        for key, label in (("seq_mbs", "sequential, dd bs=1M buffered, MB/s"),
                           ("iops", f"4 KiB O_DIRECT QD1 x{BLK_4K_COUNT}, IOPS")):
            o = [b[key] for b in blk["ours"]]
            q = [b[key] for b in blk["q35"]]
            if not o or not q:
                print(f"  {label:44} {'failed':>8}")
                continue
            rs = ratios(o, q) if len(o) == len(q) else [statistics.median(o) / statistics.median(q)]
            print(f"  {label:44} {statistics.median(o):8.1f} {statistics.median(q):8.1f} "
                  f"{statistics.median(rs):7.2f}  {spread(rs)}")


if __name__ == "__main__":
    sys.exit(main())
