"""One thread per vCPU: KVM_RUN, decode the exit, dispatch, repeat.

The loop is the VMM's hot path.  It reads the exit straight out of the mmapped
``struct kvm_run`` through cffi views made once (no copies, no GET_REGS), looks
the port up in a dict, and calls the device.  Everything optional (tracing,
statistics) is behind one local boolean.

Kick: another thread sets ``kvm_run.immediate_exit`` and sends SIGUSR1 to the
vCPU thread.  Either KVM_RUN is already running and returns EINTR, or it is
about to start and returns EINTR at once because of immediate_exit — so a vCPU
spinning in the kernel (e.g. on a ``vmcall`` our PVM host never completes) is
always interruptible.

Control: a vCPU is CREATED, RUNNING, PARKED or EXITED (``VcpuState``; the table
is in ARCHITECTURE.md, "Threads").  Other threads send it events -- stop, the
VMM's pause/resume, the guest's take_offline/bring_online, ``call`` work -- as
flags plus a kick; its own thread acts on them between two KVM_RUNs and is the
only one to change its state.  The hot path tests one flag (``_stop``) per exit.
"""

from __future__ import annotations

import enum
import errno
import signal
import threading
import time
from collections import Counter, deque
from typing import TYPE_CHECKING

from kvm_bindings import KvmError, VcpuFd, consts, ffi
from kvm_bindings.kvm import VCPU_STATE_NAMES
from kvm_bindings import run_vcpu_fd
from kvm_bindings import run_vcpu_cached
from vmm import exitcodes, trace
from vmm.errors import internal_error
from vmm.extint import InterruptWindow
from vmm.locks import ordered_condition
from vmm.port_cache import SLOTS as PORT_CACHE_SLOTS
from vmm.trace_events import (
    TP_VCPU_EXIT_IO as TP_EXIT_IO,
    TP_VCPU_EXIT_MMIO as TP_EXIT_MMIO,
    TP_VCPU_EXIT_MSR as TP_EXIT_MSR,
    TP_VCPU_EXIT_OTHER as TP_EXIT_OTHER,
    TP_VCPU_EXIT_IOAPIC_EOI as TP_EXIT_EOI,
    TP_VCPU_EXIT_XEN as TP_EXIT_XEN,
    TP_VCPU_STATE,
)

if TYPE_CHECKING:
    from vmm.vm import Vm

KICK_SIGNAL = signal.SIGUSR1

EXIT_NAMES = {getattr(consts, n): n[len("KVM_EXIT_"):].lower() for n in dir(consts)
              if n.startswith("KVM_EXIT_") and n not in ("KVM_EXIT_IO_IN", "KVM_EXIT_IO_OUT", "KVM_EXIT_XEN_HCALL")}

_MASKS = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}


SERVICE_S = 0.005    # how often a vCPU thread waiting in ``call`` runs its own queued calls

_current = threading.local()


def _report_errors(vcpu: "Vcpu", fn) -> None:
    try:
        fn(vcpu)
    except BaseException as e:   # noqa: BLE001 - nobody waits for it
        internal_error(f"vcpu{vcpu.id} call", e)


def current_vcpu() -> "Vcpu":
    """The Vcpu whose thread is running this code (device handlers that need
    the caller's registers, e.g. the Xen hypercall port, use it)."""
    return _current.vcpu


def install_kick_handler() -> None:
    """Must run in the main thread before vCPU threads start.

    The handler itself does nothing; its existence makes SIGUSR1 interrupt
    KVM_RUN with EINTR instead of killing the process.
    """
    signal.signal(KICK_SIGNAL, lambda signum, frame: None)


class VcpuState(enum.Enum):
    """Where a vCPU's thread is (ARCHITECTURE.md, "vCPU states").  Only in RUNNING may
    its thread be inside KVM_RUN; in every other state its fd is idle, so any thread
    may use it (``call`` does, borrowing the vCPU so that it can't leave the state)."""
    CREATED = "created"      # no thread yet
    RUNNING = "running"      # the thread runs guest code (KVM_RUN) and its exits
    PARKED = "parked"        # the thread waits outside KVM_RUN: paused, offline, or borrowed
    EXITED = "exited"        # the thread left its loop for good


class Vcpu:
    def __init__(self, vm: "Vm", fd: VcpuFd):
        self.vm = vm
        self.fd = fd
        self.id = fd.id
        self.thread: threading.Thread | None = None
        self.state = VcpuState.CREATED     # changed under _cond, by the vCPU's own thread
        # The events.  Each is a flag the thread acts on at its next EINTR (a kick):
        self._stop = False                 # stop: leave the loop (the loop tests it at every exit)
        self._pause_requested = False      # the VMM's pause (snapshots); resume() clears it
        self._offline = False              # the guest took the vCPU down (Xen VCPUOP_down); bring_online() clears it
        self._borrowed = 0                 # callers running a ``call`` on the idle fd from their own thread
        self._cond = ordered_condition("vcpu.state")
        self.stats: Counter[str] = Counter()
        self.exits = 0
        self.cached_reads = ffi.new("__u64[]", PORT_CACHE_SLOTS)   # reads answered in C (vmm/port_cache.py)
        # Extra exit handlers (e.g. Xen hypercalls, MSR exits) installed by
        # higher layers: reason -> fn(vcpu) -> None.
        self.exit_handlers: dict[int, object] = {}
        # KVM's interrupt window (request_interrupt_window, KVM_EXIT_IRQ_WINDOW_OPEN), shared
        # by whoever injects from userspace: the PIC's ExtINT, Xen's global vector (vmm/extint.py).
        self.irq_window = InterruptWindow(self)
        # ``call`` work that must run on this vCPU's own thread between two KVM_RUNs
        # (vCPU ioctls from other threads would block on KVM's vcpu mutex).
        self._requests: deque = deque()

    # ---------------------------------------------------------- events
    def start(self) -> None:
        """CREATED -> RUNNING (or PARKED, if paused or offline before it started)."""
        self.thread = threading.Thread(target=self._thread_main, name=f"vcpu{self.id}", daemon=True)
        self.thread.start()

    def kick(self) -> None:
        """Make KVM_RUN return (EINTR) as soon as possible."""
        run = self.fd.run
        if run is not None:
            run.immediate_exit = 1
        t = self.thread
        if t is not None and t.is_alive() and t.ident is not None:
            try:
                signal.pthread_kill(t.ident, KICK_SIGNAL)
            except ProcessLookupError:
                pass

    def _notice(self) -> None:
        """Make the vCPU act on a changed flag before it next runs guest code."""
        if self.thread is threading.current_thread():
            if self.fd.run is not None:
                self.fd.run.immediate_exit = 1   # own thread: the next KVM_RUN returns EINTR at once
        else:
            self.kick()
        with self._cond:                         # a parked vCPU waits on the condition
            self._cond.notify_all()

    def call(self, fn, timeout: float = 1.0, wait: bool = True):
        """The one way to run ``fn(vcpu)`` where a vCPU ioctl can't block: right here if
        this is the vCPU's own thread or its fd is idle (CREATED, PARKED, EXITED: the
        vCPU is borrowed meanwhile and can't go back to KVM_RUN), else on its thread,
        kicked out of KVM_RUN, before its next entry.

        wait=True: returns fn's result (or raises its exception); raises TimeoutError if
        the vCPU didn't get to it within ``timeout`` s.  (A vCPU ioctl from another thread
        would wait for its KVM_RUN to end, forever if it sits in HLT; a vCPU thread that
        doesn't answer is busy in the VMM handling an exit of its own.)  A vCPU thread
        that waits here runs its own queued calls meanwhile, so two vCPUs calling each
        other don't deadlock.
        wait=False: returns None at once (on the vCPU's own thread: after fn, which ran
        right here); fn runs as above, its errors are internal errors (on the own thread:
        the caller's)."""
        if self.thread is threading.current_thread():
            return fn(self)
        with self._cond:
            idle = self.state is not VcpuState.RUNNING
            if idle:
                self._borrowed += 1
            else:
                box: list = []
                done = threading.Event()

                def run(v) -> None:
                    try:
                        box.append((True, fn(v)))
                    except BaseException as e:   # noqa: BLE001 - handed back to the caller
                        box.append((False, e))
                        if not wait:
                            internal_error(f"vcpu{self.id} call", e)
                    finally:
                        done.set()
                self._requests.append(run)
        if idle:
            try:
                return fn(self) if wait else _report_errors(self, fn)
            finally:
                with self._cond:
                    self._borrowed -= 1
                    self._cond.notify_all()
        self.kick()
        if not wait:
            return None
        me = getattr(_current, "vcpu", None)
        deadline = time.monotonic() + timeout
        while not done.wait(SERVICE_S if me is not None else max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"vcpu{self.id} did not run the request within {timeout} s")
            me._run_requests()
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def _run_requests(self) -> None:
        while self._requests:
            self._requests.popleft()(self)

    def service(self) -> bool:
        """For code that waits *on this vCPU's thread* outside KVM_RUN (Xen's
        SCHEDOP_block and poll park there): run the calls that arrived meanwhile,
        and say whether the vCPU must go back to its loop now (a pause, offline or stop)."""
        if self._requests:
            self._run_requests()
        return self._stop or self._pause_requested or self._offline

    def stop(self) -> None:
        """-> EXITED: at once if PARKED, at its next exit if RUNNING, as it starts if
        CREATED.  Doesn't wait (Vm.wait joins the thread)."""
        self._stop = True
        self._notice()

    def pause(self, timeout: float = 5.0) -> None:
        """RUNNING -> PARKED.  Returns once the vCPU runs no guest code (parked, exited, or
        never started); raises TimeoutError if it isn't parked within ``timeout`` s.  From
        the vCPU's own thread it returns at once: the vCPU parks before its next KVM_RUN."""
        self._pause_requested = True
        self._notice()
        if self.thread is threading.current_thread():
            return
        with self._cond:
            if not self._cond.wait_for(lambda: self.state is not VcpuState.RUNNING or self._stop, timeout):
                raise TimeoutError(f"vcpu{self.id} did not pause within {timeout} s")

    def resume(self) -> None:
        """Undo pause(): PARKED -> RUNNING, unless the guest has the vCPU offline."""
        with self._cond:
            self._pause_requested = False
            self._cond.notify_all()

    @property
    def pause_requested(self) -> bool:
        return self._pause_requested

    def take_offline(self) -> None:
        """The guest takes this vCPU down (Xen VCPUOP_down), maybe from its own thread:
        it parks before its next KVM_RUN.  Guest-visible, unlike pause(): a VMM
        pause/resume doesn't bring it back; only bring_online() does."""
        self._offline = True
        self._notice()

    def bring_online(self) -> bool:
        """Undo take_offline(); False if the vCPU wasn't offline."""
        with self._cond:
            was = self._offline
            self._offline = False
            self._cond.notify_all()
        return was

    @property
    def offline(self) -> bool:
        return self._offline

    # ---------------------------------------------------------- snapshot (ARCHITECTURE.md "Snapshots")
    def save_state(self, msr_indices: list[int]) -> dict:
        """The vCPU's architectural state as KVM holds it (the kernel's structs as bytes), the
        MSRs KVM will read of ``msr_indices`` (KVM_GET_MSR_INDEX_LIST), the TSC's rate, and
        the guest's offline hold.  The vCPU must be paused (or not started): ``call`` then
        runs on the idle fd in this thread."""
        def save(v: "Vcpu") -> dict:
            fd = v.fd
            s: dict = {name: fd.get_state_bytes(name) for name in VCPU_STATE_NAMES}
            s["msrs"] = {f"{k:#x}": val for k, val in fd.get_msrs_best_effort(msr_indices).items()}
            s["tsc_khz"] = fd.get_tsc_khz()
            s["offline"] = v._offline
            return s
        return self.call(save)

    def restore_state(self, state: dict) -> list[int]:
        """Put ``save_state``'s result back (CPUID set already).  QEMU's order: sregs (APIC
        base, EFER) before the LAPIC and the MSRs, MSRs (the TSC deadline) after the LAPIC,
        events and mp_state last.  Returns the MSRs KVM refused."""
        def restore(v: "Vcpu") -> list[int]:
            fd = v.fd
            if state["tsc_khz"] != fd.get_tsc_khz():
                fd.set_tsc_khz(state["tsc_khz"])
            for name in ("sregs", "regs", "xcrs", "xsave", "lapic"):
                fd.set_state_bytes(name, state[name])
            refused = fd.set_msrs_best_effort({int(k, 16): val for k, val in state["msrs"].items()})
            for name in ("mp_state", "vcpu_events", "debugregs"):
                fd.set_state_bytes(name, state[name])
            if state["offline"]:
                v.take_offline()
            return refused
        return self.call(restore)

    def join(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    # ---------------------------------------------------------- states
    def _thread_main(self) -> None:
        try:
            self._park()                 # CREATED -> RUNNING, or PARKED first
            self._loop()
        except KvmError as e:
            self.vm.request_exit(exitcodes.VMM_ERROR, f"vcpu{self.id}: {e}")
        except BaseException as e:  # never let a vCPU thread die silently
            internal_error(f"vcpu{self.id}", e)     # printed, counted, and `vmm run` exits 1
            self.vm.request_exit(exitcodes.VMM_ERROR, f"vcpu{self.id}: internal error: {e!r}")
        finally:
            with self._cond:
                self._set_state(VcpuState.EXITED)
            try:
                self._run_requests()     # calls queued as it stopped: the fd is idle now
            except BaseException as e:  # noqa: BLE001
                internal_error(f"vcpu{self.id}", e)

    def _set_state(self, state: VcpuState) -> None:
        """Under _cond.  Wakes whoever waits for a state (pause)."""
        self.state = state
        self._cond.notify_all()

    def _park(self) -> None:
        """Wait outside KVM_RUN while the vCPU is paused, offline or borrowed; then RUNNING
        (or leave it PARKED for the loop to end, on stop).  Called on every EINTR that
        finds a hold, and once when the thread starts."""
        with self._cond:
            if self._stop:
                return
            if not (self._pause_requested or self._offline or self._borrowed):
                self._set_state(VcpuState.RUNNING)
                return
            self._set_state(VcpuState.PARKED)
        if TP_VCPU_STATE.enabled:
            TP_VCPU_STATE.emit(self.id, state="paused")
        self._run_requests()             # queued while RUNNING: their callers wait for them
        with self._cond:
            while (self._pause_requested or self._offline or self._borrowed) and not self._stop:
                self._cond.wait()
            if self._stop:
                return
            self._set_state(VcpuState.RUNNING)
        if TP_VCPU_STATE.enabled:
            TP_VCPU_STATE.emit(self.id, state="running")

    def _loop(self) -> None:
        vm = self.vm
        fd = self.fd
        run = fd.run
        io = fd.io
        kvm_run = run_vcpu_fd            # the C wrapper itself: no Python frame per KVM_RUN
        vcpu_fd = fd.fd
        handlers = vm.pio_bus.handlers   # port -> (read, write, offset, name)
        base = fd.run_buffer
        p8 = ffi.cast("uint8_t *", base)
        p16 = ffi.cast("uint16_t *", base)
        p32 = ffi.cast("uint32_t *", base)
        ptrs = (None, (p8, 0), (p16, 1), None, (p32, 2))
        EXIT_IO = consts.KVM_EXIT_IO
        IO_OUT = consts.KVM_EXIT_IO_OUT
        EINTR = -errno.EINTR
        EAGAIN = -errno.EAGAIN
        slow = vm.stats_enabled or TP_EXIT_IO.enabled
        timed = TP_EXIT_IO.enabled       # the exit's handling becomes a span (a Perfetto slice)
        clock = trace.now
        t_exit = 0.0
        stats = self.stats
        cpu = self.id
        exits = 0
        _current.vcpu = self
        ring = vm.coalesced.indices      # first/last; None: this KVM can't coalesce (vmm/coalesced.py)
        drain = vm.coalesced.drain
        # Published port reads are answered in C unless every I/O exit is traced (vmm/port_cache.py).
        cache = vm.port_cache.table
        cached = cache.n > 0 and not TP_EXIT_IO.enabled
        cached_args = (vcpu_fd, run, cache, self.cached_reads, vm.coalesced.ring or ffi.NULL,
                       vm.coalesced.entries, vm.coalesced.entries * 3 // 4)
        run_cached = run_vcpu_cached

        try:
            while not self._stop:
                r = run_cached(*cached_args) if cached else kvm_run(vcpu_fd)
                if r < 0:
                    if r == EINTR:
                        run.immediate_exit = 0
                        if self._requests:         # first: a call may be what a pauser waits for
                            self._run_requests()
                        if (self._pause_requested or self._offline) and not self._stop:
                            self._park()
                        if self._requests:
                            self._run_requests()
                        continue
                    if r == EAGAIN:  # an AP waiting for SIPI may see this
                        continue
                    raise KvmError("KVM_RUN", -r)
                if r:                              # answered in C; the coalesced ring wants replaying
                    drain()
                    continue
                exits += 1
                if ring is not None and ring[0] != ring[1]:
                    drain()                    # the guest's coalesced writes happened before this exit
                reason = run.exit_reason
                if reason == EXIT_IO:
                    if timed:
                        t_exit = clock()
                    port = io.port
                    size = io.size
                    h = handlers.get(port)
                    ptr, shift = ptrs[size]
                    idx = io.data_offset >> shift
                    count = io.count
                    out = io.direction == IO_OUT
                    if h is None:
                        value = ptr[idx] if out else _MASKS[size]
                        if not out:
                            for i in range(count):
                                ptr[idx + i] = value
                    elif count == 1:               # the common case: no loop
                        if out:
                            value = ptr[idx]
                            h[1](h[2], size, value)
                        else:
                            value = h[0](h[2], size)
                            ptr[idx] = value
                    elif out:                      # rep outs
                        dev_write, off = h[1], h[2]
                        for i in range(count):
                            value = ptr[idx + i]
                            dev_write(off, size, value)
                    else:                          # rep ins
                        dev_read, off = h[0], h[2]
                        for i in range(count):
                            value = dev_read(off, size)
                            ptr[idx + i] = value
                    if slow:
                        name = h[3] if h is not None else "unassigned"
                        if TP_EXIT_IO.enabled:
                            TP_EXIT_IO.emit(cpu, since=t_exit, port=port, size=size, dir="out" if out else "in",
                                            value=value, count=count, dev=name)
                        stats["io"] += 1
                        stats["io:" + name] += 1
                    continue
                self._slow_exit(reason)
                if self._requests:
                    self._run_requests()
        finally:
            self.exits += exits

    def _slow_exit(self, reason: int) -> None:
        """Everything but port I/O: rarer exits, handled off the hot path."""
        vm = self.vm
        fd = self.fd
        name = EXIT_NAMES.get(reason, str(reason))
        if vm.stats_enabled:
            self.stats[name] += 1
        handler = self.exit_handlers.get(reason)
        if handler is not None:
            if TP_EXIT_MSR.enabled or TP_EXIT_XEN.enabled or TP_EXIT_OTHER.enabled:
                self._traced_handler(handler, reason, name)
            else:
                handler(self)
            return
        if reason == consts.KVM_EXIT_MMIO:
            self._mmio()
        elif reason == consts.KVM_EXIT_IOAPIC_EOI:
            vector = fd.eoi.vector
            if TP_EXIT_EOI.enabled:
                t0 = trace.now()
                vm.irqchip.ioapic_eoi(vector)
                TP_EXIT_EOI.emit(self.id, since=t0, vector=vector)
            else:
                vm.irqchip.ioapic_eoi(vector)
        elif reason == consts.KVM_EXIT_SHUTDOWN:
            self._trace_other(name)
            vm.request_exit(exitcodes.TRIPLE_FAULT, f"vcpu{self.id}: triple fault (KVM_EXIT_SHUTDOWN)")
            self._stop = True
        elif reason == consts.KVM_EXIT_SYSTEM_EVENT:
            t = fd.system_event.type
            self._trace_other(f"{name} type={t}")
            if t == consts.KVM_SYSTEM_EVENT_SHUTDOWN:
                vm.request_exit(exitcodes.GUEST_POWEROFF, "guest powered off")
            elif t == consts.KVM_SYSTEM_EVENT_RESET:
                vm.request_exit(exitcodes.GUEST_RESET, "guest reset")
            else:
                vm.request_exit(exitcodes.GUEST_FAILURE, f"guest crashed (system event {t})")
            self._stop = True
        elif reason == consts.KVM_EXIT_INTERNAL_ERROR:
            ie = fd.internal
            data = " ".join(f"{ie.data[i]:#x}" for i in range(min(ie.ndata, 16)))
            rip = self._rip()
            self._trace_other(f"{name} suberror={ie.suberror}")
            vm.request_exit(exitcodes.GUEST_FAILURE,
                            f"vcpu{self.id}: KVM internal error, suberror {ie.suberror}"
                            f"{' (instruction emulation failed)' if ie.suberror == consts.KVM_INTERNAL_ERROR_EMULATION else ''}"
                            f" at rip {rip} data [{data}]")
            self._stop = True
        elif reason == consts.KVM_EXIT_FAIL_ENTRY:
            fe = fd.fail_entry
            self._trace_other(name)
            vm.request_exit(exitcodes.GUEST_FAILURE,
                            f"vcpu{self.id}: VM entry failed, reason {fe.hardware_entry_failure_reason:#x}")
            self._stop = True
        elif reason == consts.KVM_EXIT_HLT:
            # Only without an in-kernel LAPIC; we always have one, so a HLT
            # exit means the guest halted for good.
            self._trace_other(name)
            vm.request_exit(exitcodes.GUEST_POWEROFF, f"vcpu{self.id}: halted")
            self._stop = True
        elif reason == consts.KVM_EXIT_INTR:
            pass
        else:
            self._trace_other(name)
            vm.request_exit(exitcodes.GUEST_FAILURE, f"vcpu{self.id}: unhandled exit {name}")
            self._stop = True

    def _traced_handler(self, handler, reason: int, name: str) -> None:
        """An exit a higher layer handles (the Xen MSR, a Xen hypercall, an interrupt
        window), traced as a span around the handler."""
        fd = self.fd
        t0 = trace.now()
        if reason in (consts.KVM_EXIT_X86_RDMSR, consts.KVM_EXIT_X86_WRMSR):
            is_write = reason == consts.KVM_EXIT_X86_WRMSR
            handler(self)
            m = fd.msr
            if TP_EXIT_MSR.enabled:
                TP_EXIT_MSR.emit(self.id, since=t0, index=m.index, dir="wrmsr" if is_write else "rdmsr",
                                 value=m.data, handled=not m.error)
        elif reason == consts.KVM_EXIT_XEN:
            x = fd.xen
            is_hcall = x.type == consts.KVM_EXIT_XEN_HCALL
            if is_hcall:        # read before the handler: it writes the result into the same union
                h = x.u.hcall
                nr, longmode, cpl = h.input, h.longmode, h.cpl
            handler(self)
            if TP_EXIT_XEN.enabled:
                if is_hcall:
                    TP_EXIT_XEN.emit(self.id, since=t0, input=nr, longmode=longmode, cpl=cpl)
                else:
                    TP_EXIT_XEN.emit(self.id, since=t0, input=f"type {x.type}", longmode="?", cpl="?")
        else:
            handler(self)
            if TP_EXIT_OTHER.enabled:
                TP_EXIT_OTHER.emit(self.id, since=t0, reason=name)

    def _rip(self) -> str:
        try:
            return f"{self.fd.get_regs().rip:#x}"
        except KvmError:
            return "?"

    def _trace_other(self, what: str) -> None:
        if TP_EXIT_OTHER.enabled:
            TP_EXIT_OTHER.emit(self.id, reason=what)

    def _mmio(self) -> None:
        t0 = trace.now() if TP_EXIT_MMIO.enabled else None
        mmio = self.fd.mmio
        addr = mmio.phys_addr
        length = mmio.len
        if length not in (1, 2, 4, 8):
            return
        m = self.vm.mmio_bus.find(addr)
        if m is not None and addr + length > m.end:
            m = None  # straddles the end of the device: treat as unassigned
        if mmio.is_write:
            value = int.from_bytes(ffi.buffer(mmio.data, length), "little")
            if m is not None:
                m.device.write(addr - m.base, length, value)
        else:
            value = m.device.read(addr - m.base, length) if m is not None else _MASKS[length]
            ffi.buffer(mmio.data, 8)[0:length] = (value & _MASKS[length]).to_bytes(length, "little")
        name = m.name if m is not None else "unassigned"
        if self.vm.stats_enabled:
            self.stats["mmio:" + name] += 1
        if TP_EXIT_MMIO.enabled:
            TP_EXIT_MMIO.emit(self.id, since=t0, addr=addr, len=length, dir="write" if mmio.is_write else "read",
                              value=value, dev=name)
