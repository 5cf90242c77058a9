"""`vmm` command line: run, caps, trace-points, testhost.

`vmm run` maps its arguments to a ``MachineSpec`` and builds the machine with
vmm/machine.py, the composition root (the one module of ``vmm`` that imports
``devices`` and ``xen``: tests/test_layering.py); this module imports neither.
"""

from __future__ import annotations

import argparse
import os
import sys

from vmm import __version__, exitcodes, trace
from vmm.errors import UserError, internal_errors
from vmm.sizes import parse_size


class _VersionAction(argparse.Action):
    """`--version`: vmm/__init__.py's, which the installed metadata has too."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"vmm {__version__}")
        parser.exit()


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


def _nonnegative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text}")
    return v


class _Parser(argparse.ArgumentParser):
    """argparse with our bad-input convention: one line on stderr, exit 2."""

    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(exitcodes.USER_ERROR)

    def _get_formatter(self):
        # argparse makes a formatter for every add_argument too, and its default width comes
        # from shutil.get_terminal_size: importing shutil (and with it bz2, lzma) was ~2 ms of
        # every start.  The same width (HelpFormatter's: the terminal's columns - 2) without it.
        return self.formatter_class(prog=self.prog, width=_terminal_columns() - 2)


def _terminal_columns() -> int:
    """shutil.get_terminal_size().columns: $COLUMNS, else stdout's terminal, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """``argv``: the command line about to be parsed.  When it starts with a command, only that
    command is declared (and `run`'s options for `restore`, which takes some of them): each
    parser costs argparse gettext look-ups that stat locale files and each option a help
    formatter, ~5 ms of every start for all of them (x25 in the nested test host), and the
    other commands can't be parsed anyway.  Otherwise (help, a bad command) all of them,
    `testhost` by name only (its options import the launcher, ~10 % of a `vmm run` start)
    unless ``argv`` is None."""
    p = _Parser(prog="vmm", description="A KVM microVMM with Xen HVM emulation.",
                epilog="Docs: README.md, ARCHITECTURE.md, docs/ in the source tree.")
    p.add_argument("--version", action=_VersionAction, help="show the version and exit")
    if argv == ["--version"]:
        return p                    # it prints and exits before a command could matter
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    command = argv[0] if argv and argv[0] in _COMMANDS else None
    declared = {}
    for name, declare in _COMMANDS.items():
        if command is None or name == command or (name == "run" and command == "restore"):
            declared[name] = declare(sub, declared, full=argv is None or command == name)
    return p


def _declare_run(sub, declared: dict, full: bool) -> argparse.ArgumentParser:
    r = sub.add_parser("run", help="boot a kernel in a new VM",
                       description="Boot a PVH ELF or a Linux bzImage. The exit status is the guest's "
                                   "(debug-exit port value, 0 on poweroff) or one of: 80 reset, "
                                   "81 triple fault, 82 KVM could not run the guest or it crashed, 83 guest kernel panic (pvpanic), 124 timeout, "
                                   "130 interrupted, 2 bad input, 1 VMM error.")
    r.add_argument("--kernel", metavar="PATH", help="PVH ELF (32/64-bit) or bzImage "
                                                      "(required unless --trace list)")
    r.add_argument("--initrd", metavar="PATH", help="initial ramdisk / PVH module")
    r.add_argument("--cmdline", default="", metavar="STR", help="kernel command line")
    r.add_argument("--memory", "-m", default="256M", metavar="SIZE", help="guest RAM, e.g. 512M, 2G (default 256M)")
    r.add_argument("--cpus", type=_positive_int, default=1, metavar="N", help="number of vCPUs (default 1)")
    r.add_argument("--serial", default="stdio", metavar="stdio|file:PATH|none",
                   help="where the console goes: COM1 and, with --xen, the Xen consoles (default stdio; on a "
                        "terminal Ctrl-A x quits); none drops COM1's output only")
    r.add_argument("--debugcon", default="off", metavar="off|stderr|file:PATH",
                   help="where the 0xE9 debug port's output goes, a line at a time (default off)")
    r.add_argument("--irqchip", choices=("kernel", "split"), default=None,
                   help="interrupt controller: all in kernel, or I/OAPIC in user space "
                        "(default kernel; split with --xen)")
    r.add_argument("--xen", action="store_true", help="run the guest as a Xen HVM guest (CPUID, hypercalls, "
                   "event channels, shared_info, Xen platform PCI device)")
    r.add_argument("--xen-version", default="4.17", metavar="MAJOR.MINOR",
                   help="Xen version the guest sees (default 4.17)")
    r.add_argument("--xen-hypercalls", choices=("auto", "kernel", "port"), default="auto",
                   help="hypercall transport: KVM's Xen support, or port I/O stubs (default auto)")
    r.add_argument("--xen-no-kvm-accel", dest="xen_kvm_accel", action="store_false",
                   help="with the kernel transport, don't hand event delivery and SCHEDOP_poll to KVM "
                        "(KVM then treats poll as a yield)")
    r.add_argument("--xen-fifo", choices=("auto", "on", "off"), default="auto",
                   help="offer FIFO event channels: auto (default) offers them unless KVM's acceleration "
                        "delivers events, which it can only do for 2-level ones; off: EVTCHNOP_init_control "
                        "is -ENOSYS, as QEMU; on: offered even then, and the VMM delivers a FIFO guest's events")
    r.add_argument("--xen-no-fifo", dest="xen_fifo", action="store_const", const="off",
                   help="same as --xen-fifo off")
    r.add_argument("--xen-nr-pirqs", type=int, default=256, metavar="N",
                   help="PIRQs of the Xen domain (default 256, as QEMU: keeps PIRQ MSI addresses 32-bit)")
    r.add_argument("--xen-console", choices=("serial", "pv", "both"), default="both",
                   help="where the terminal's input goes with --xen: COM1, the Xen PV console (hvc0), or "
                        "both (default); the output of every console is shown, a line at a time")
    r.add_argument("--xen-name", default="guest", metavar="NAME",
                   help="the Xen domain's name (xenstore's /local/domain/<id>/name; default guest)")
    r.add_argument("--xenstore", action="append", default=[], metavar="PATH=VALUE",
                   help="write a xenstore node as the toolstack before the guest starts (repeatable); "
                        "a relative PATH is under the guest's /local/domain/<id>/")
    r.add_argument("--xen-shutdown-timeout", type=_nonnegative_float, default=30.0, metavar="S",
                   help="with --xen, SIGTERM asks the guest to power off (xenstore control/shutdown, as "
                        "`xl shutdown`) and stops it after S seconds if it hasn't (default 30; 0: at once). "
                        "A second SIGTERM, or a guest without xenbus, stops it at once")
    r.add_argument("--xen-apic-virt", action="store_true",
                   help="advertise APIC and x2APIC access virtualization in Xen's CPUID leaf base+4: "
                        "Linux then uses native MSIs instead of MSI PIRQs")
    r.add_argument("--trace", action="append", default=[], metavar="GLOB",
                   help="enable trace points matching GLOB (repeatable), e.g. 'vcpu.exit.*'; "
                        "'list' prints every point with its fields and exits (as `vmm trace-points`)")
    r.add_argument("--trace-file", metavar="PATH", help="write trace output here instead of stderr "
                   "(a .json file gets the perfetto format)")
    r.add_argument("--trace-format", choices=trace.FORMATS, default=None,
                   help="text: one line per event (default); perfetto: Chrome/Perfetto trace-event JSON, "
                        "one track per vCPU and thread, for ui.perfetto.dev (default for a .json --trace-file)")
    r.add_argument("--stats", action="store_true", help="print exit counts per reason and device at the end")
    r.add_argument("--no-acpi", action="store_true",
                   help="give the guest no ACPI tables (no MADT, no ACPI poweroff/reset)")
    r.add_argument("--no-pci", action="store_true", help="no PCI bus (no config ports 0xcf8-0xcff, no host bridge)")
    r.add_argument("--pci-testdev", action="store_true",
                   help="plug the PCI test device (devices/pci_testdev.py: INTx, MSI and MSI-X on demand, timed bursts) for test guests")
    r.add_argument("--virtio-rng", action="store_true",
                   help="plug a virtio-rng device (virtio 1.x over modern PCI) fed from the host's getrandom()")
    r.add_argument("--drive", action="append", default=[], metavar="path=FILE[,readonly]",
                   help="plug a virtio-blk disk backed by FILE (repeatable); readonly: the guest can't write it")
    r.add_argument("--net", action="append", default=[], metavar="tap=NAME[,mac=52:54:00:xx:xx:xx]",
                   help="plug a virtio-net NIC on the tap device NAME (repeatable; create it first with "
                        "`ip tuntap add NAME mode tap user USER`); mac: its address (default: 52:54:00 and a "
                        "hash of NAME)")
    r.add_argument("--xen-platform-device", action="store_true", help=argparse.SUPPRESS)  # until `--xen` implies it
    r.add_argument("--timeout", type=_positive_float, metavar="S", help="stop the guest after S seconds (exit 124)")
    r.add_argument("--api-socket", metavar="PATH",
                   help="serve the control API on this UNIX socket (JSON lines: status, pause, resume, stats, "
                        "shutdown, snapshot; vmm/api.py)")
    r.set_defaults(func=cmd_run)
    return r


def _declare_restore(sub, declared: dict, full: bool) -> argparse.ArgumentParser:
    r = declared["run"]
    rs = sub.add_parser("restore", help="resume a VM from a snapshot",
                        description="Build the machine a snapshot recorded (its MachineSpec) in its saved state "
                                    "and resume it. Only options that don't change the machine can be given; "
                                    "exit status as for run.")
    rs.add_argument("--from", dest="snapshot", required=True, metavar="FILE", help="the snapshot file")
    for opt in ("--serial", "--debugcon", "--trace", "--trace-file", "--trace-format", "--stats", "--timeout",
                "--xen-shutdown-timeout", "--api-socket"):
        action = r._option_string_actions[opt]
        kwargs = {"dest": action.dest, "help": action.help, "default": None}
        if isinstance(action, argparse._StoreTrueAction):
            rs.add_argument(opt, action="store_true", **kwargs)
        elif isinstance(action, argparse._AppendAction):
            rs.add_argument(opt, action="append", metavar=action.metavar, **kwargs)
        else:
            rs.add_argument(opt, type=action.type, choices=action.choices, metavar=action.metavar, **kwargs)
    rs.set_defaults(func=cmd_restore, run_options=set(r._option_string_actions), parser=rs)
    return rs


def _declare_snapshot(sub, declared: dict, full: bool) -> argparse.ArgumentParser:
    sn = sub.add_parser("snapshot", help="snapshot a running VM through its control socket")
    sn.add_argument("--api-socket", required=True, metavar="PATH", help="the VM's --api-socket")
    sn.add_argument("--to", required=True, metavar="FILE", help="the snapshot file to write")
    sn.set_defaults(func=cmd_snapshot)
    return sn


def _declare_ctl(sub, declared: dict, full: bool) -> argparse.ArgumentParser:
    ct = sub.add_parser("ctl", help="send one command to a running VM's control socket",
                        description="Commands: status, pause, resume, stats, shutdown, snapshot (with --to). "
                                    "Prints the JSON answer; exit 0 if it is ok, 1 if not.")
    ct.add_argument("--api-socket", required=True, metavar="PATH", help="the VM's --api-socket")
    ct.add_argument("cmd", metavar="CMD")
    ct.add_argument("--to", metavar="FILE", help="snapshot: the file to write")
    ct.set_defaults(func=cmd_ctl)
    return ct


def _declare_caps(sub, declared: dict, full: bool) -> argparse.ArgumentParser:
    c = sub.add_parser("caps", help="show what the host KVM offers")
    c.set_defaults(func=cmd_caps)
    return c


def _declare_trace_points(sub, declared: dict, full: bool) -> argparse.ArgumentParser:
    t = sub.add_parser("trace-points", help="list every trace point with its fields (no VM)",
                       description="Every trace point, from the declaration tables of vmm/, devices/ and "
                                   "xen/ (*/trace_events.py): name(fields) \"format\".")
    t.add_argument("--doc", action="store_true", help="print the names as ARCHITECTURE.md's Tracing list")
    t.set_defaults(func=cmd_trace_points)
    return t


def _declare_testhost(sub, declared: dict, full: bool) -> argparse.ArgumentParser | None:
    if not full:
        return sub.add_parser("testhost", help="run a command inside a nested VM whose KVM supports Xen")
    try:
        from vmm.testhost.cli import add_parser as add_testhost
    except ImportError:
        return None
    return add_testhost(sub)


# Every command, in the order `vmm --help` lists them: ``declare(sub, declared, full)`` adds it
# to ``sub``; ``declared``: the parsers declared before it, by name (restore takes run's
# options); ``full``: testhost's own options too, not only its name.
_COMMANDS = {"run": _declare_run, "restore": _declare_restore, "snapshot": _declare_snapshot,
             "ctl": _declare_ctl, "caps": _declare_caps, "trace-points": _declare_trace_points,
             "testhost": _declare_testhost}


# ---------------------------------------------------------------- run
def cmd_run(args) -> int:
    """`vmm run`: spec from the arguments -> build -> start -> wait -> report."""
    # Everything here may raise UserError; main() turns it into one line + exit 2.
    if "list" in args.trace:
        print(trace.listing(_trace_tables()), end="")
        return 0
    if args.kernel is None:
        raise UserError("run: --kernel is required")
    fmt = trace.output_format(args.trace_file, args.trace_format)
    if fmt == "perfetto" and not args.trace_file:
        raise UserError("--trace-format perfetto needs a --trace-file")
    spec = spec_from_args(args)
    spec.validate()
    _open_trace(args, fmt)
    try:
        return _run(spec, args.timeout, args.api_socket)
    finally:
        trace.close_output()      # the JSON's closing bracket, however the run ended


def _open_trace(args, fmt) -> None:
    if args.trace_file:
        try:
            trace.open_output(args.trace_file, fmt)
        except OSError as e:
            raise UserError(f"--trace-file: cannot open {args.trace_file}: {e.strerror}") from None


# ---------------------------------------------------------------- restore, snapshot, ctl
def cmd_restore(args) -> int:
    """`vmm restore --from FILE`: the snapshot's machine, its state loaded, resumed."""
    extra = [a for a in getattr(args, "unknown", [])]
    if extra:
        opt = extra[0].split("=")[0]
        if opt in args.run_options:
            raise UserError(f"restore: {opt} changes the machine the snapshot recorded; restore builds that "
                            f"machine as it was (give only {', '.join(sorted(_RESTORE_FLAGS))})")
        raise UserError(f"restore: unrecognized arguments: {' '.join(extra)}")
    from vmm.machine import BuildError, restore_builder
    from vmm.snapshot import SnapshotError
    overrides = {}
    for key, value in (("serial", args.serial), ("debugcon", args.debugcon), ("stats", args.stats or None),
                       ("shutdown_timeout", args.xen_shutdown_timeout), ("trace", args.trace)):
        if value is not None:
            overrides[key] = value
    fmt = trace.output_format(args.trace_file, args.trace_format)
    if fmt == "perfetto" and not args.trace_file:
        raise UserError("--trace-format perfetto needs a --trace-file")
    try:
        builder, reader = restore_builder(args.snapshot, overrides)
    except SnapshotError as e:
        raise UserError(str(e)) from None
    _open_trace(args, fmt)
    try:
        with reader:
            return _run(builder.spec, args.timeout, args.api_socket, builder=builder)
    except SnapshotError as e:
        raise UserError(str(e)) from None
    finally:
        trace.close_output()


_RESTORE_FLAGS = ("--serial", "--debugcon", "--trace", "--trace-file", "--trace-format", "--stats", "--timeout",
                  "--xen-shutdown-timeout", "--api-socket")


def _ctl(path: str, req: dict) -> dict:
    from vmm.api import request
    try:
        return request(path, req)
    except (OSError, ValueError) as e:
        raise UserError(f"--api-socket {path}: {getattr(e, 'strerror', None) or e}") from None


def cmd_snapshot(args) -> int:
    answer = _ctl(args.api_socket, {"cmd": "snapshot", "to": args.to})
    if not answer.get("ok"):
        print(f"vmm: snapshot failed: {answer.get('error')}", file=sys.stderr)
        return exitcodes.VMM_ERROR
    print(f"snapshot {answer['path']}: {answer['bytes']} bytes ({answer['memory_saved']} of "
          f"{answer['memory_size']} bytes of memory) in {answer['seconds']} s")
    return 0


def cmd_ctl(args) -> int:
    import json
    req = {"cmd": args.cmd}
    if args.to is not None:
        req["to"] = args.to
    answer = _ctl(args.api_socket, req)
    print(json.dumps(answer))
    return 0 if answer.get("ok") else 1


def spec_from_args(args):
    """The machine `vmm run` describes (vmm/machine.py MachineSpec); text parsed here."""
    from vmm.machine import MachineSpec, XenConfig
    memory = parse_size(args.memory, "--memory")
    xen = None
    if args.xen:
        xen = XenConfig(version=_parse_xen_version(args.xen_version), hypercalls=args.xen_hypercalls,
                        kvm_accel=args.xen_kvm_accel, fifo={"auto": None, "on": True, "off": False}[args.xen_fifo], nr_pirqs=args.xen_nr_pirqs, apic_virt=args.xen_apic_virt)
    return MachineSpec(kernel=args.kernel, initrd=args.initrd, cmdline=args.cmdline, memory=memory,
                       cpus=args.cpus, irqchip=args.irqchip, serial=args.serial, debugcon=args.debugcon,
                       acpi=not args.no_acpi, pci=not args.no_pci, pci_testdev=args.pci_testdev,
                       virtio_rng=args.virtio_rng, drives=[_parse_drive(d) for d in args.drive],
                       nets=[_parse_net(n) for n in args.net],
                       xen_platform=args.xen_platform_device, xen=xen, xen_console=args.xen_console,
                       xen_name=args.xen_name, xenstore=[_parse_xenstore(kv) for kv in args.xenstore],
                       shutdown_timeout=args.xen_shutdown_timeout, stats=args.stats,
                       trace=list(args.trace))


def _parse_drive(text: str) -> dict:
    """``path=FILE[,readonly]`` -> {"path": FILE, "readonly": bool}."""
    drive: dict = {"readonly": False}
    for item in text.split(","):
        key, eq, value = item.partition("=")
        if key == "path" and eq and value:
            drive["path"] = value
        elif key == "readonly" and not eq:
            drive["readonly"] = True
        elif key == "path":
            raise UserError(f"--drive: path= needs a file name, in {text!r}")
        else:
            raise UserError(f"--drive: unknown option {item!r} in {text!r} (expected path=FILE[,readonly])")
    if "path" not in drive:
        raise UserError(f"--drive: no path=FILE in {text!r}")
    return drive


def _parse_net(text: str) -> dict:
    """``tap=NAME[,mac=MAC]`` -> {"tap": NAME, "mac": MAC or None} (the values are checked
    by MachineSpec.validate)."""
    net: dict = {}
    for item in text.split(","):
        key, eq, value = item.partition("=")
        if key not in ("tap", "mac") or not eq:
            raise UserError(f"--net: unknown option {item!r} in {text!r} (expected tap=NAME[,mac=MAC])")
        if not value:
            raise UserError(f"--net: {key}= needs a value, in {text!r}")
        if key in net:
            raise UserError(f"--net: {key}= given twice in {text!r}")
        net[key] = value
    net.setdefault("mac", None)
    if "tap" not in net:
        raise UserError(f"--net: no tap=NAME in {text!r}")
    return net


def _parse_xenstore(kv: str) -> tuple[str, str]:
    path, eq, value = kv.partition("=")
    if not eq or not path:
        raise UserError(f"--xenstore: expected PATH=VALUE, got {kv!r}")
    return path, value


def _run(spec, timeout: float | None, api_socket: str | None = None, builder=None) -> int:
    from vmm.machine import BuildError, MachineBuilder
    try:
        machine = (builder or MachineBuilder(spec)).build()
    except BuildError as e:
        print(f"vmm: {e}", file=sys.stderr)
        return exitcodes.VMM_ERROR
    try:
        server = None
        if api_socket:
            from vmm.api import ApiError, ApiServer     # (its sockets: imported when asked for)
            try:
                server = ApiServer(api_socket, machine.api_handlers())
            except ApiError as e:
                raise UserError(str(e)) from None
            machine.on_close(server.stop)
        machine.start()
        if server is not None:
            server.start()
        code = machine.wait(timeout)
    finally:
        machine.close()
    vm = machine.vm
    if code not in (exitcodes.GUEST_POWEROFF,) and not vm.exit_reason.startswith("guest wrote"):
        print(f"vmm: {vm.exit_reason} (exit {code})", file=sys.stderr)
    if spec.stats:
        print_stats(vm)
    errors = internal_errors()
    if errors:
        # However the guest ended, a VMM bug happened on the way: say so, and fail.
        print(f"vmm: {len(errors)} internal error(s), first: {errors[0]}", file=sys.stderr)
        code = exitcodes.VMM_ERROR
    return code


def _trace_tables() -> list:
    from vmm.machine import trace_tables
    return trace_tables()


def cmd_trace_points(args) -> int:
    tabs = _trace_tables()
    print(trace.doc_list(tabs) if args.doc else trace.listing(tabs), end="")
    return 0


def _parse_xen_version(text: str) -> tuple[int, int]:
    try:
        major, minor = (int(x) for x in text.split("."))
    except ValueError:
        raise UserError(f"--xen-version: expected MAJOR.MINOR, got {text!r}") from None
    if not (3 <= major <= 255 and 0 <= minor <= 255):
        raise UserError(f"--xen-version: {text} is out of range")
    return major, minor


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
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        if getattr(args, "func", None) is cmd_restore:
            args.unknown = unknown
        else:
            parser.parse_args(argv)            # argparse's own one-line error, exit 2
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
