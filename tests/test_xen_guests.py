"""Xen HVM emulation, tested by kit guests that use the hypercall page.

Every guest asserts on what it observes (return values, shared_info bits,
handler invocations, timer accuracy) and prints PASS, or ends through a Xen
shutdown whose reason becomes our exit code.  Each guest's checks and the Xen
source behind them are listed in guest-images/XEN_TESTS.md.

Tiers:
* port transport on this host's /dev/kvm (no Xen support needed);
* both transports on a Xen-capable KVM (``xen_kvm``: the nested test host).
"""

from __future__ import annotations

import os
import re
import time

import pytest

from vmm import exitcodes

XENSTORE_ARGS = ["--xen-name", "kit-xs", "--xenstore", "data/greeting=hello from the toolstack"]

# name -> (extra vmm args, guest cmdline, expected exit code, lines the output must contain)
GUESTS: dict[str, tuple[list[str], str, int, list[str]]] = {
    "xen_smoke": ([], "", 0, ["PASS"]),
    "xen_version": ([], "xenver=0x40011", 0, ["PASS"]),
    "xen_memory": ([], "", 0, ["PASS"]),
    "xen_hvm_params": ([], "", 0, ["PASS"]),
    "xen_vcpu_op": ([], "slack_ms={slack}", 0, ["PASS"]),
    "xen_sched": ([], "slack_ms={slack}", exitcodes.GUEST_RESET, ["all checks passed"]),
    "xen_shutdown_poweroff": ([], "", exitcodes.GUEST_POWEROFF, []),
    "xen_shutdown_crash": ([], "", exitcodes.GUEST_FAILURE, []),
    "xen_vcpu_down_last": (["--timeout", "20"], "", exitcodes.GUEST_POWEROFF, []),
    "xen_shutdown_unknown": ([], "", exitcodes.GUEST_FAILURE, ["SCHEDOP_shutdown(suspend) = -95 ok"]),
    # The BEL in the guest's first line is stripped (console.c guest_console_write).
    "xen_console": ([], "", 0, ["PASS", "XENCON-7f3a hello from CONSOLEIO_write", "XENCON-7f3a split-line-ok"]),
    "xen_gnttab": ([], "", 0, ["PASS"]),
    # FIFO's 2-level-domain errors need FIFO offered, whatever --xen-fifo's default for the
    # transport (auto: off with KVM's acceleration); test_fifo_off_* checks the other side.
    "xen_evtchn_ops": (["--xen-fifo", "on"], "", 0, ["PASS"]),
    "xen_upcall_vector": ([], "", 0, ["PASS"]),
    "xen_upcall_callback_vector": ([], "", 0, ["PASS"]),
    "xen_upcall_gsi": ([], "", 0, ["PASS"]),
    "xen_upcall_intx": ([], "", 0, ["PASS"]),
    "xen_timer": ([], "slack_ms={slack}", 0, ["PASS"]),
    "xen_pvclock_wallclock": ([], "wallclock={now}", 0, ["PASS", "within"]),
    "xen_ipi_smp": (["--cpus", "2"], "", 0, ["PASS"]),
    # FIFO event channels (xen/evtchn_fifo.py); with the kernel transport the FIFO domain's
    # events are delivered by the VMM, not KVM (KvmXenAccel.stop_event_delivery).
    "xen_fifo": (["--cpus", "2", "--xen-fifo", "on"], "events=1500", 0, ["PASS", "1500 handled on vCPU 0, 0 duplicates"]),
    "xen_negative": ([], "", 0, ["PASS"]),
    "xen_negative_cpl3": ([], "", 0, ["PASS"]),
    "xen_compat32": ([], "", 0, ["PASS"]),
    "xen_compat_switch": ([], "", 0, ["PASS"]),
    "xen_pirq_gsi": ([], "", 0, ["PASS"]),
    "xen_pirq_msi": ([], "", 0, ["PASS"]),
    "xen_pirq_negative": ([], "", 0, ["PASS"]),
    "xen_pirq_smp": (["--cpus", "2"], "", 0, ["PASS"]),
    "xen_pirq_msix": (["--pci-testdev"], "", 0, ["PASS"]),
    # 60 s of load (the PIRQ issue's figure): ~62 s per transport; --timeout leaves the
    # nested host room for its slower setup and wind-down.
    "xen_pirq_stress": (["--cpus", "2", "--pci-testdev", "--timeout", "120"], "secs=60", 0, ["PASS"]),
    # Seeded hypercall fuzzing (guest-images/tests/xen_fuzz.c): one fixed seed in every tier
    # (~3 s here; sized for the nested host's slower calls); more seeds and a fresh one per
    # run in test_xen_fuzz_seeds.
    # One vCPU: on a real KVM two vCPUs can hang after VCPUOP_down(1) (an open bug the fuzzer
    # found, see test_xen_fuzz_fresh_seed_on_xen_capable_kvm); 2 vCPUs run in test_xen_fuzz_seeds.
    # FIFO on (a faulting FIFO op wants -EFAULT); the fresh seeds run the kernel transport
    # with it off.
    "xen_fuzz": (["--cpus", "1", "--xen-fifo", "on"], "seed=1 calls=600", 0, ["PASS", "xen_fuzz: seed=1:"]),
    # The PV console (xen/pv_console.py): its lines come through the ring, the piped input back.
    "xen_pv_console": ([], "", 0, ["PASS", "PVCON-5e1d hello through the PV console ring",
                                   "PVCON-ECHO ping-pv", "PVCON-AFTER corrupt indices",
                                   "PVCON-WRAP lmnopqrstuvwxyz" + "abcdefghijklmnopqrstuvwxyz" * 100]),
    # Xenstore (xen/xenstore/, xen/xenstore_backend.py): the nodes libxl writes, a --xenstore
    # node, permissions, transactions, watches, a hostile message and a reconnection.
    "xen_xenstore": (XENSTORE_ARGS, "", 0, ["PASS", "the domain's nodes ok", "permissions and errors ok",
                                            "transactions ok", "watches ok", "reconnection ok",
                                            "malformed requests and quotas answered, still serving ok"]),
}

# What a guest gets on its (piped) standard input: the VMM forwards it to COM1 and the PV console.
STDIN: dict[str, bytes] = {"xen_pv_console": b"ping-pv\n"}

# Timers must never fire early; how late they may be depends on where the VMM runs. Our
# host emulates every guest instruction (~1.5 M/s) and the nested host runs Python ~16x
# slower than the host: the VMM's own reaction time is the bound, measured there.
SLACK_MS = {"port-host": 150, "xen_kvm": 400}

# With the kernel transport KVM answers some hypercalls itself (arch/x86/kvm/xen.c) and
# we never see them.  Stock KVM (6.1 and upstream) deviates from Xen there:
# * SCHEDOP_poll (kvm_xen_hcall_sched_op): the timeout is taken as relative ns (Xen:
#   absolute system time), 32-bit callers get a yield, and time blocked in it counts as
#   running;
# * the vCPU timer we hand to KVM (xen/kvm_timer.py): a singleshot vcpu_op naming a vCPU
#   the domain doesn't have is -EINVAL (Xen: -ENOENT).
# The nested host's KVM carries fixes (vmm/testhost/kvm_fixes/6.1/<fix>.patch) and says
# so in VMM_TESTHOST_KVM_FIXES; on a KVM without one the guests it matters to are strict
# xfails, so they start failing the day KVM is fixed.
KVM_DEVIATIONS = {
    "xen-schedop-poll": {"xen_sched": "SCHEDOP_poll's timeout taken as relative",
                         "xen_vcpu_op": "no blocked runstate time in KVM's SCHEDOP_poll",
                         "xen_compat32": "no compat sched_poll: a 32-bit poll is a yield"},
    "xen-vcpu-timer-other-vcpu": {"xen_timer": "KVM's timer: a missing vCPU's singleshot is -EINVAL, not -ENOENT"},
}


def kvm_deviation(name: str) -> str | None:
    """Why ``name`` fails on the kernel transport of this host's KVM (None: it shouldn't)."""
    fixes = host_kvm_fixes()
    for fix, guests in KVM_DEVIATIONS.items():
        if name in guests and fix not in fixes:
            return guests[name]
    return None


def host_kvm_fixes() -> set[str]:
    return set(filter(None, os.environ.get("VMM_TESTHOST_KVM_FIXES", "").split(",")))


# Without the acceleration (--xen-no-kvm-accel) KVM makes poll a yield; that mode is
# checked on the guests that don't poll.
NO_ACCEL_GUESTS = ["xen_smoke", "xen_version", "xen_memory", "xen_evtchn_ops", "xen_upcall_vector",
                   "xen_upcall_callback_vector", "xen_upcall_gsi", "xen_timer", "xen_pirq_gsi", "xen_pirq_msi",
                   "xen_fifo"]

# On our PVM host a ring-3 `out` faults whatever the guest's IOPL, so the port
# transport's stub can't carry a CPL-3 hypercall to us (on a real KVM it does,
# and we answer -EPERM): that guest runs in the Xen-capable tier only.
NOT_ON_EMULATED_HOST = {"xen_negative_cpl3"}


def host_is_emulated() -> bool:
    return os.path.isdir("/sys/module/kvm_pvm")


def run_guest(vmm, guest, name: str, transport: str, slack_ms: int = SLACK_MS["port-host"]):
    extra, cmdline, code, expect = GUESTS[name]
    cmdline = cmdline.format(now=int(time.time()), slack=slack_ms)
    if transport == "kernel-noaccel":
        transport, extra = "kernel", [*extra, "--xen-no-kvm-accel"]
    r = vmm("run", "--xen", "--xen-hypercalls", transport, "--kernel", guest(name), "--cmdline", cmdline,
            "--timeout", "90", *extra, timeout=150, stdin=STDIN.get(name, b""))
    ctx = f"\nexit {r.code}\nstdout:\n{r.out}\nstderr:\n{r.err[-3000:]}"
    assert r.code == code, ctx
    assert "FAIL" not in r.out, ctx
    for line in expect:
        assert line in r.out, f"missing {line!r}{ctx}"
    return r


def _host_params():
    """Every guest, a reported skip for the ones this host's KVM can't carry."""
    for name in GUESTS:
        marks = []
        if name in NOT_ON_EMULATED_HOST:
            marks.append(pytest.mark.skipif(host_is_emulated(), reason="PVM host: a ring-3 `out` faults, so the "
                                            "port transport can't carry a CPL-3 hypercall (runs in the xen_kvm tier)"))
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_host_params()))
def test_xen_guest_port_transport(vmm, guest, name):
    run_guest(vmm, guest, name, "port")


# The port transport is the VMM's own path, the same on every KVM (KVM's Xen support is
# used only by the kernel transport: XenDomain.accel), and the host tier runs it for every
# guest.  The Xen-capable tier repeats it only where that host shows what ours can't: a
# CPL-3 `out`, and 2-vCPU guests at hardware virtualization's timing.  (Each nested run
# costs ~17 s, mostly the VMM's start at the nested host's Python speed.)
PORT_ON_XEN_KVM = NOT_ON_EMULATED_HOST | {"xen_ipi_smp", "xen_pirq_smp", "xen_fifo"}


def _xen_kvm_params():
    for name in GUESTS:
        for transport in ("kernel", "port") if name in PORT_ON_XEN_KVM else ("kernel",):
            marks = []
            if transport == "kernel" and (why := kvm_deviation(name)):
                marks.append(pytest.mark.xfail(strict=True, reason="stock KVM: " + why))
            yield pytest.param(name, transport, marks=marks, id=f"{name}-{transport}")


@pytest.mark.xen_kvm
@pytest.mark.parametrize("name,transport", list(_xen_kvm_params()))
def test_xen_guest_on_xen_capable_kvm(vmm, guest, name, transport):
    run_guest(vmm, guest, name, transport, SLACK_MS["xen_kvm"])


@pytest.mark.xen_kvm
@pytest.mark.parametrize("name", NO_ACCEL_GUESTS)
def test_xen_guest_kernel_transport_without_kvm_acceleration(vmm, guest, name):
    run_guest(vmm, guest, name, "kernel-noaccel", SLACK_MS["xen_kvm"])


@pytest.mark.xen_kvm
@pytest.mark.xfail(bool(kvm_deviation("xen_timer")), strict=True, reason=f"stock KVM: {kvm_deviation('xen_timer')}")
def test_kvm_runs_the_singleshot_timer_so_its_calls_cost_no_exit(vmm, guest):
    """xen_timer with KVM's acceleration: once VIRQ_TIMER is bound, KVM runs vCPU 0's
    singleshot timer (xen/kvm_timer.py), so its >300 set_timer_op and its singleshot
    vcpu_ops never exit to the VMM -- and every accuracy check of the guest still holds.
    Only the periodic timer's vcpu_ops (not in KVM) and a few setup calls do."""
    r = vmm("run", "--xen", "--xen-hypercalls", "kernel", "--kernel", guest("xen_timer"), "--stats",
            "--cmdline", f"slack_ms={SLACK_MS['xen_kvm']}", "--timeout", "90", timeout=150)
    ctx = f"\nexit {r.code}\nstdout:\n{r.out[-3000:]}\nstderr:\n{r.err[-3000:]}"
    assert r.code == 0 and "PASS" in r.out and "FAIL" not in r.out, ctx
    exits = {m[1]: int(m[2]) for m in re.finditer(r"^\s+hcall:(\w+)\s+(\d+)$", r.err, re.M)}
    assert exits, ctx                                   # --stats printed the hypercall exits
    assert "set_timer_op" not in exits, ctx
    assert exits.get("vcpu_op", 0) <= 12, ctx          # periodic set/stop, the invalid period


def test_xen_shutdown_reasons_are_reported(vmm, guest):
    r = run_guest(vmm, guest, "xen_shutdown_crash", "port")
    assert "crashed (SCHEDOP_shutdown)" in r.err
    r = run_guest(vmm, guest, "xen_shutdown_unknown", "port")
    assert "unknown reason 119" in r.err
    run_guest(vmm, guest, "xen_vcpu_down_last", "port")     # exit 0: only our poweroff gives it


def test_fifo_off_every_fifo_op_is_enosys(vmm, guest):
    """--xen-fifo off (the default with KVM's acceleration): FIFO is not offered, so
    init_control, expand_array and set_priority are -ENOSYS and the rest of the 2-level
    ABI is unchanged (the guest's `fifo=off` branch)."""
    r = vmm("run", "--xen", "--xen-hypercalls", "port", "--xen-fifo", "off", "--kernel", guest("xen_evtchn_ops"),
            "--cmdline", "fifo=off", "--timeout", "90", timeout=150)
    ctx = f"\nexit {r.code}\nstdout:\n{r.out}\nstderr:\n{r.err[-3000:]}"
    assert r.code == 0 and "PASS" in r.out and "FAIL" not in r.out, ctx
    for op in ("expand_array", "set_priority", "init_control"):
        assert f"{op} (FIFO not offered) = -38 ok" in r.out, ctx


def test_xen_hypercall_trace_and_stats(vmm, guest):
    r = vmm("run", "--xen", "--kernel", guest("xen_smoke"), "--timeout", "60",
            "--trace", "xen.hcall", "--trace", "xen.evtchn.*", "--stats")
    assert r.code == 0, r.err
    assert "xen_version(" in r.err and "[cmd=version]" in r.err and "= 0x40011" in r.err
    assert re.search(r"xen\.evtchn\.bind port=\d+ kind=ipi", r.err), r.err[-3000:]
    assert "xen.evtchn.upcall vcpu=0 via=vector 0xf3" in r.err
    assert "hcall:event_channel_op" in r.err


def test_kernel_transport_needs_a_xen_capable_kvm(vmm, guest):
    from kvm_bindings import Kvm, consts
    kvm = Kvm()
    has_xen = kvm.check_extension(consts.KVM_CAP_XEN_HVM) & consts.KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL
    kvm.close()
    if has_xen:
        pytest.skip("this host's KVM has Xen support: the kernel transport is available")
    r = vmm("run", "--xen", "--xen-hypercalls", "kernel", "--kernel", guest("xen_smoke"))
    assert r.code == exitcodes.USER_ERROR
    assert "no Xen support" in r.err and len(r.err.strip().splitlines()) == 1


# Fixed seeds (1 and 2 vCPUs) plus a fresh seed per run: ~2000 calls on vCPU 0 (vCPU 1 runs
# alongside until vCPU 0 is done) take 5-20 s each on our emulating host.  A failure names
# its seed in the guest's FAIL line; rerun with `--cmdline "seed=N calls=2000"`.
FUZZ_RUNS = [pytest.param(2, 1, id="seed2-1cpu"), pytest.param(3, 2, id="seed3-2cpu"),
             pytest.param(None, 2, id="fresh-2cpu")]


@pytest.mark.parametrize("seed,cpus", FUZZ_RUNS)
def test_xen_fuzz_seeds(vmm, guest, seed, cpus):
    import random
    import re
    if seed is None:
        seed = random.SystemRandom().randrange(1, 1 << 32)
    calls = 2000
    repro = (f"vmm run --xen --xen-hypercalls port --cpus {cpus} --kernel guest-images/build/xen_fuzz.elf "
             f"--cmdline 'seed={seed} calls={calls}'")
    print(f"xen_fuzz seed {seed}: {repro}")
    r = vmm("run", "--xen", "--xen-hypercalls", "port", "--cpus", str(cpus), "--kernel", guest("xen_fuzz"),
            "--cmdline", f"seed={seed} calls={calls}", "--timeout", "100", "--stats", timeout=150)
    ctx = f"\nseed {seed} (reproduce: {repro})\nexit {r.code}\nstdout:\n{r.out[-6000:]}\nstderr:\n{r.err[-3000:]}"
    assert r.code == 0, ctx
    assert "FAIL" not in r.out and "PASS" in r.out, ctx
    assert f"xen_fuzz: seed={seed}:" in r.out, ctx
    # --stats: EAX values past the page's 128 entries share one counter (a hostile guest
    # picking a new number per call must not grow the VMM's table without bound)
    assert "hcall:hypercall_beyond_page" in r.err, ctx
    assert not re.search(r"hcall:hypercall_(\d{4,}|[2-9]\d\d|1[3-9]\d|12[89])\b", r.err), ctx


@pytest.mark.xen_kvm
@pytest.mark.parametrize("transport", ["kernel", "port"])
def test_xen_fuzz_fresh_seed_on_xen_capable_kvm(vmm, guest, transport):
    """One fresh seed per CI run on each transport of a Xen-capable KVM too (the fixed
    seed runs through GUESTS, on 2 vCPUs); printed so a failure reproduces.  One vCPU here:
    with two, seed 2697099737 on the port transport hangs the guest after VCPUOP_down(1)
    (vCPU 0 makes no further hypercall; timing-dependent, not seen with vcpu.* tracing on),
    an open bug reported in the closing note of session 3 -- a fresh seed must not make CI
    flaky while it is open."""
    import random
    seed, calls = random.SystemRandom().randrange(1, 1 << 32), 400
    # --xen-fifo's default for each transport: off with KVM's acceleration (every FIFO op
    # is then -ENOSYS, and the guest is told), on for the port transport.
    fifo = " fifo=off" if transport == "kernel" else ""
    repro = (f"vmm run --xen --xen-hypercalls {transport} --cpus 1 --kernel guest-images/build/xen_fuzz.elf "
             f"--cmdline 'seed={seed} calls={calls}{fifo}'")
    print(f"xen_fuzz seed {seed}: {repro}")
    r = vmm("run", "--xen", "--xen-hypercalls", transport, "--cpus", "1", "--kernel", guest("xen_fuzz"),
            "--cmdline", f"seed={seed} calls={calls}{fifo}", "--timeout", "120", timeout=170)
    ctx = f"\nseed {seed} (reproduce: {repro})\nexit {r.code}\nstdout:\n{r.out[-6000:]}\nstderr:\n{r.err[-3000:]}"
    assert r.code == 0 and "PASS" in r.out and "FAIL" not in r.out, ctx
