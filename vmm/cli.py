"""`vmm` command line: run, caps, testhost.

This module is the composition root: the one place in ``vmm`` that imports
``devices`` (and, later, ``xen``) to assemble a machine.  Library modules of
``vmm`` never do (tests/test_layering.py checks it).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from importlib import metadata

from vmm import exitcodes, trace
from vmm.errors import UserError
from vmm.sizes import parse_size


def _version() -> str:
    try:
        return metadata.version("vmm")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return v


class _Parser(argparse.ArgumentParser):
    """argparse with our bad-input convention: one line on stderr, exit 2."""

    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(exitcodes.USER_ERROR)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vmm", description="A KVM microVMM with Xen HVM emulation.",
                epilog="Docs: README.md, ARCHITECTURE.md, docs/ in the source tree.")
    p.add_argument("--version", action="version", version=f"vmm {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    r = sub.add_parser("run", help="boot a kernel in a new VM",
                       description="Boot a PVH ELF or a Linux bzImage. The exit status is the guest's "
                                   "(debug-exit port value, 0 on poweroff) or one of: 80 reset, "
                                   "81 triple fault, 82 KVM could not run the guest, 124 timeout, "
                                   "130 interrupted, 2 bad input, 1 VMM error.")
    r.add_argument("--kernel", required=True, metavar="PATH", help="PVH ELF (32/64-bit) or bzImage")
    r.add_argument("--initrd", metavar="PATH", help="initial ramdisk / PVH module")
    r.add_argument("--cmdline", default="", metavar="STR", help="kernel command line")
    r.add_argument("--memory", "-m", default="256M", metavar="SIZE", help="guest RAM, e.g. 512M, 2G (default 256M)")
    r.add_argument("--cpus", type=_positive_int, default=1, metavar="N", help="number of vCPUs (default 1)")
    r.add_argument("--serial", default="stdio", metavar="stdio|file:PATH|none",
                   help="where COM1 goes (default stdio; on a terminal Ctrl-A x quits)")
    r.add_argument("--irqchip", choices=("kernel", "split"), default="kernel",
                   help="interrupt controller: all in kernel, or I/OAPIC in user space (default kernel)")
    r.add_argument("--trace", action="append", default=[], metavar="GLOB",
                   help="enable trace points matching GLOB (repeatable), e.g. 'vcpu.exit.*'; "
                        "'list' prints the names")
    r.add_argument("--trace-file", metavar="PATH", help="write trace output here instead of stderr")
    r.add_argument("--stats", action="store_true", help="print exit counts per reason and device at the end")
    r.add_argument("--timeout", type=_positive_float, metavar="S", help="stop the guest after S seconds (exit 124)")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("caps", help="show what the host KVM offers")
    c.set_defaults(func=cmd_caps)

    try:
        from vmm.testhost.cli import add_parser as add_testhost
    except ImportError:
        add_testhost = None
    if add_testhost is not None:
        add_testhost(sub)
    return p


# ---------------------------------------------------------------- run
def cmd_run(args) -> int:
    # Everything here may raise UserError; main() turns it into one line + exit 2.
    from devices.board import attach_pc_devices
    from kvm_bindings import KvmError
    from vmm.boot import load_kernel
    from vmm.console import Console
    from vmm.irqchip import IrqChipError
    from vmm.vm import Vm, VmConfig, VmSetupError

    memory = parse_size(args.memory, "--memory")
    if not os.path.exists(args.kernel):
        raise UserError(f"kernel not found: {args.kernel}")
    if args.initrd and not os.path.exists(args.initrd):
        raise UserError(f"initrd not found: {args.initrd}")
    trace_file = None
    if args.trace_file:
        try:
            trace_file = open(args.trace_file, "w", buffering=1)
        except OSError as e:
            raise UserError(f"--trace-file: cannot open {args.trace_file}: {e.strerror}") from None
        trace.set_sink(trace_file)
    list_traces = "list" in args.trace
    for pattern in args.trace:
        if pattern != "list":
            trace.enable(pattern)

    console = Console(args.serial)
    try:
        vm = Vm(VmConfig(memory=memory, cpus=args.cpus, irqchip=args.irqchip))
    except ValueError as e:
        raise UserError(f"--memory: {e}") from None
    except (VmSetupError, IrqChipError) as e:
        raise UserError(str(e)) from None
    except KvmError as e:
        print(f"vmm: cannot create the VM: {e}", file=sys.stderr)
        return exitcodes.VMM_ERROR
    vm.stats_enabled = args.stats
    try:
        pc = attach_pc_devices(vm, console.write)
        if list_traces:
            for name in sorted(trace.points()):
                print(name, file=sys.stderr)
        load_kernel(vm.memory, vm.boot_vcpu, args.kernel, args.cmdline, args.initrd)

        def stop(signum=None, frame=None):
            vm.request_exit(exitcodes.INTERRUPTED, "interrupted")
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        console.start_input(pc.serial.feed, stop)
        vm.start()
        code = vm.wait(args.timeout)
    finally:
        console.close()
    if code not in (exitcodes.GUEST_POWEROFF,) and not vm.exit_reason.startswith("guest wrote"):
        print(f"vmm: {vm.exit_reason} (exit {code})", file=sys.stderr)
    if args.stats:
        print_stats(vm)
    if trace_file:
        trace_file.close()
    vm.close()
    return code


def print_stats(vm) -> None:
    stats = vm.collect_stats()
    lines = ["vmm stats:", f"  exits total {stats.pop('exits', 0)}"]
    for key, n in sorted(stats.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {key:<28} {n}")
    print("\n".join(lines), file=sys.stderr)


# ---------------------------------------------------------------- caps
def describe_caps() -> list[tuple[str, str]]:
    from kvm_bindings import Kvm, consts
    kvm = Kvm()
    rows = [("api_version", str(consts.KVM_API_VERSION))]
    backend = "unknown"
    for mod, desc in (("kvm_pvm", "kvm_pvm (PVM: guests run by instruction emulation, no VMX/SVM)"),
                      ("kvm_intel", "kvm_intel (VMX)"), ("kvm_amd", "kvm_amd (SVM)")):
        if os.path.isdir(f"/sys/module/{mod}"):
            backend = desc
            break
    rows.append(("backend", backend))
    rows.append(("emulated", "yes" if backend.startswith("kvm_pvm") else "no"))
    for name in ("KVM_CAP_NR_VCPUS", "KVM_CAP_MAX_VCPUS", "KVM_CAP_NR_MEMSLOTS", "KVM_CAP_IRQCHIP",
                 "KVM_CAP_SPLIT_IRQCHIP", "KVM_CAP_IRQ_ROUTING", "KVM_CAP_IRQFD", "KVM_CAP_IRQFD_RESAMPLE",
                 "KVM_CAP_IOEVENTFD", "KVM_CAP_SIGNAL_MSI", "KVM_CAP_SYNC_REGS", "KVM_CAP_IMMEDIATE_EXIT",
                 "KVM_CAP_X86_USER_SPACE_MSR", "KVM_CAP_X86_MSR_FILTER", "KVM_CAP_X2APIC_API",
                 "KVM_CAP_TSC_DEADLINE_TIMER", "KVM_CAP_PIT2", "KVM_CAP_HYPERV"):
        rows.append((name[len("KVM_CAP_"):].lower(), str(kvm.check_extension(getattr(consts, name)))))
    xen = kvm.check_extension(consts.KVM_CAP_XEN_HVM)
    flags = [n[len("KVM_XEN_HVM_CONFIG_"):] for n in (
        "KVM_XEN_HVM_CONFIG_HYPERCALL_MSR", "KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL",
        "KVM_XEN_HVM_CONFIG_SHARED_INFO", "KVM_XEN_HVM_CONFIG_RUNSTATE",
        "KVM_XEN_HVM_CONFIG_EVTCHN_2LEVEL", "KVM_XEN_HVM_CONFIG_EVTCHN_SEND") if xen & getattr(consts, n)]
    # Bits newer than our <linux/kvm.h> (Linux uapi, include/uapi/linux/kvm.h).
    for bit, name in ((6, "RUNSTATE_UPDATE_FLAG"), (7, "PVCLOCK_TSC_UNSTABLE"), (8, "SHARED_INFO_HVA")):
        if xen & (1 << bit):
            flags.append(name)
    rows.append(("xen_hvm", f"{xen:#x} ({' '.join(flags) if flags else 'no Xen support'})"))
    kvm.close()
    return rows


def cmd_caps(args) -> int:
    from kvm_bindings import KvmError
    try:
        rows = describe_caps()
    except KvmError as e:
        print(f"vmm: {e}", file=sys.stderr)
        return exitcodes.VMM_ERROR
    for k, v in rows:
        print(f"{k:<22} {v}")
    return 0


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return exitcodes.USER_ERROR
    try:
        return args.func(args)
    except UserError as e:
        print(f"vmm: error: {e}", file=sys.stderr)
        return exitcodes.USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
