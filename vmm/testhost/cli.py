"""``vmm testhost {run,prepare,status}``.

Wire into the top-level parser with ``add_parser(subparsers)``; it sets
``func`` to a handler that takes the parsed args and returns the exit status.
``python -m vmm.testhost ...`` runs the same commands standalone.
"""

from __future__ import annotations

import argparse
import sys
import time

from vmm.testhost import launcher
from vmm.testhost.config import TesthostError, cache_root

DEFAULT_TIMEOUT = 3600.0

DESCRIPTION = """\
Run a command of ours inside a VM whose KVM supports Xen (the nested test host).

The outer VM is QEMU/TCG with nested SVM booting Debian's kernel with kvm.ko
and kvm-amd.ko rebuilt with CONFIG_KVM_XEN.  The host's / is visible read-only
under a tmpfs overlay (writes inside are discarded), so the same absolute
paths work; the command runs in the caller's cwd with the caller's
environment (plus VMM_TESTHOST=1).  Its stdout and stderr are streamed back
and its exit status is ours; 124 = --timeout expired, 125 = the test host
itself failed.  Missing Debian packages are installed (apt-get, as root) and
the modules built into ${VMM_CACHE_DIR:-~/.cache/vmm}/testhost/<abi>/ first.
"""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_run(args) -> int:
    from vmm.testhost import prepare
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        _log("vmm testhost run: no command given (usage: vmm testhost run [options] -- CMD...)")
        return 2
    t0 = time.monotonic()
    art = prepare.artifacts_if_ready() if args.no_prepare else prepare.prepare(_log)
    if args.verbose:
        _log(f"testhost: prepared in {time.monotonic() - t0:.2f} s")
    timeout = args.timeout if args.timeout and args.timeout > 0 else None
    result = launcher.run(art, command, timeout=timeout, memory=args.memory, cpus=args.cpus,
                          verbose=args.verbose, keep=args.keep)
    return result.exit_code


def cmd_prepare(args) -> int:
    from vmm.testhost import prepare
    t0 = time.monotonic()
    art = prepare.prepare(_log, jobs=args.jobs, force_modules=args.rebuild)
    _log(f"testhost: ready in {time.monotonic() - t0:.1f} s: {art.vmlinux}, {art.initramfs}")
    return 0


def cmd_linux_guest(args) -> int:
    from vmm.testhost import initramfs, packages
    from vmm.testhost.config import linux_guest_dir
    have = packages.installed_versions(["busybox-static", packages.META_IMAGE])
    packages.apt_install([p for p, v in have.items() if v is None], _log)
    info = packages.kernel_info()
    out = args.output or str(linux_guest_dir(info.abi) / "initramfs.cpio")
    from pathlib import Path
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    path = initramfs.build_linux_guest(info.modules_dir, Path(out),
                                      modules=[*initramfs.LINUX_GUEST_MODULES, *args.module])
    print(path)
    _log(f"linux-guest: {path} (busybox + guest-images/linux/init); boot it with\n"
         f"  vmm run --kernel {info.bzimage} --initrd {path} \\\n"
         f"      --cmdline 'console=ttyS0 reboot=k panic=-1 -- sh -c \"uname -r; cat /proc/cpuinfo\"'")
    return 0


def cmd_status(args) -> int:
    from vmm.testhost import prepare
    from vmm.testhost.pytest_tier import host_xen_kvm
    st = prepare.check()
    print(f"cache: {cache_root() / 'testhost'}")
    print(f"kernel: {st.abi or '(linux-image-amd64 not installed)'}"
          + (f" ({st.version})" if st.version else ""))
    for p in st.present:
        print(f"  ok       {p}")
    for m in st.missing:
        print(f"  MISSING  {m}")
    has, why = host_xen_kvm()
    print(f"host /dev/kvm: {why}")
    print("nested test host: " + ("ready" if st.ready else "not ready (run `vmm testhost prepare`)"))
    return 0 if st.ready else 1


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``testhost`` on an ``argparse`` subparsers object; handler in ``func``."""
    p = subparsers.add_parser(
        "testhost", help="run a command inside a nested VM whose KVM supports Xen",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="testhost_command", metavar="{run,prepare,status,linux-guest}")
    sub.required = True

    r = sub.add_parser("run", help="run CMD in the nested test host; exit with its status",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                   help=f"kill the outer VM after S seconds, exit 124 (default {DEFAULT_TIMEOUT:g}; 0 = none)")
    r.add_argument("--memory", default=launcher.DEFAULT_MEMORY, metavar="M",
                   help=f"outer VM memory, e.g. 2G or 1536M (default {launcher.DEFAULT_MEMORY})")
    r.add_argument("--cpus", type=int, default=None, metavar="N",
                   help=f"outer VM vCPUs (default $VMM_TESTHOST_CPUS or {launcher.DEFAULT_CPUS})")
    r.add_argument("-v", "--verbose", action="store_true", help="report boot and command timings")
    r.add_argument("--keep", action="store_true", help="keep the console log even on success")
    r.add_argument("--no-prepare", action="store_true",
                   help="fail instead of installing packages / building modules")
    r.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD...")
    r.set_defaults(func=_guard(cmd_run))

    pr = sub.add_parser("prepare", help="install the Debian packages and build the Xen-enabled KVM modules")
    pr.add_argument("-j", "--jobs", type=int, default=None, help="make -j for the module build (default 2)")
    pr.add_argument("--rebuild", action="store_true", help="rebuild the modules even if cached")
    pr.set_defaults(func=_guard(cmd_prepare))

    lg = sub.add_parser("linux-guest", help="build the plain Linux guest's busybox initramfs "
                        "(make linux-guest); prints its path")
    lg.add_argument("-o", "--output", help="where to write it (default: the cache)")
    lg.add_argument("-m", "--module", action="append", default=[],
                    help="also load this kernel module (with its dependencies) at boot")
    lg.set_defaults(func=_guard(cmd_linux_guest))

    st = sub.add_parser("status", help="what is cached, what is missing")
    st.set_defaults(func=_guard(cmd_status))
    return p


def _guard(fn):
    def handler(args) -> int:
        try:
            return fn(args)
        except TesthostError as e:
            _log(f"vmm testhost: {e}")
            return launcher.RUNNER_FAILED
        except KeyboardInterrupt:
            return 130
    return handler


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vmm")
    add_parser(parser.add_subparsers(dest="command"))
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(["testhost", *argv])
    return args.func(args)
