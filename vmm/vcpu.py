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
"""

from __future__ import annotations

import errno
import signal
import threading
from collections import Counter, deque
from typing import TYPE_CHECKING

from kvm_bindings import KvmError, VcpuFd, consts, ffi
from kvm_bindings import run_vcpu_fd
from vmm import exitcodes, trace
from vmm.errors import internal_error
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


_current = threading.local()


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


class Vcpu:
    def __init__(self, vm: "Vm", fd: VcpuFd):
        self.vm = vm
        self.fd = fd
        self.id = fd.id
        self.thread: threading.Thread | None = None
        self._stop = False
        self._pause_requested = False
        self._paused = threading.Event()
        self._resume = threading.Condition()
        self.stats: Counter[str] = Counter()
        self.exits = 0
        # Extra exit handlers (e.g. Xen hypercalls, MSR exits) installed by
        # higher layers: reason -> fn(vcpu) -> None.
        self.exit_handlers: dict[int, object] = {}
        # Work that must run on this vCPU's own thread between two KVM_RUNs
        # (vCPU ioctls from other threads would block on KVM's vcpu mutex).
        self._requests: deque = deque()

    # ---------------------------------------------------------- control
    def start(self) -> None:
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

    def request(self, fn) -> None:
        """Run ``fn(vcpu)`` on the vCPU thread before its next KVM_RUN (kicks it)."""
        self._requests.append(fn)
        if self.thread is not threading.current_thread():
            self.kick()
        elif self.fd.run is not None:
            self.fd.run.immediate_exit = 1   # own thread: the next KVM_RUN returns EINTR at once

    def _run_requests(self) -> None:
        while self._requests:
            self._requests.popleft()(self)

    def call(self, fn, timeout: float = 1.0):
        """``fn(vcpu)`` where a vCPU ioctl can't block: right here if this is the vCPU's
        own thread or it is parked (its fd idle), else on its thread, kicked out of
        KVM_RUN.  Returns fn's result; raises TimeoutError if the vCPU didn't get to it
        (a vCPU ioctl from another thread would wait for its KVM_RUN to end, forever
        if it sits in HLT)."""
        if self.thread is threading.current_thread() or self._paused.is_set():
            return fn(self)
        box: list = []
        done = threading.Event()

        def run(v) -> None:
            try:
                box.append((True, fn(v)))
            except BaseException as e:   # noqa: BLE001 - handed back to the caller
                box.append((False, e))
            finally:
                done.set()
        self.request(run)
        if not done.wait(timeout):
            raise TimeoutError(f"vcpu{self.id} did not run the request within {timeout} s")
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def service(self) -> bool:
        """For code that waits *on this vCPU's thread* outside KVM_RUN (Xen's
        SCHEDOP_block and poll park there): run the requests that arrived meanwhile,
        and say whether the vCPU must go back to its loop now (a pause or stop)."""
        if self._requests:
            self._run_requests()
        return self._stop or self._pause_requested

    def stop(self) -> None:
        self._stop = True
        self.kick()
        with self._resume:            # a parked vCPU must see the stop too
            self._resume.notify_all()

    def pause(self, timeout: float | None = 5.0) -> bool:
        """Stop running guest code; returns once the vCPU is parked (timeout None:
        don't wait — it parks before its next KVM_RUN, e.g. when it asked for it itself)."""
        self._pause_requested = True
        self.kick()
        if timeout is None:
            return False
        return self._paused.wait(timeout)

    @property
    def paused(self) -> bool:
        return self._pause_requested

    def resume(self) -> None:
        with self._resume:
            self._pause_requested = False
            self._resume.notify_all()

    def join(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    # ---------------------------------------------------------- loop
    def _thread_main(self) -> None:
        try:
            self._loop()
        except KvmError as e:
            self.vm.request_exit(exitcodes.VMM_ERROR, f"vcpu{self.id}: {e}")
        except BaseException as e:  # never let a vCPU thread die silently
            internal_error(f"vcpu{self.id}", e)     # printed, counted, and `vmm run` exits 1
            self.vm.request_exit(exitcodes.VMM_ERROR, f"vcpu{self.id}: internal error: {e!r}")

    def _park(self) -> None:
        if TP_VCPU_STATE.enabled:
            TP_VCPU_STATE.emit(self.id, state="paused")
        self._paused.set()
        with self._resume:
            while self._pause_requested and not self._stop:
                self._resume.wait()
        self._paused.clear()
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

        try:
            while not self._stop:
                r = kvm_run(vcpu_fd)
                if r < 0:
                    if r == EINTR:
                        run.immediate_exit = 0
                        if self._requests:         # first: a request may be what a pauser waits for
                            self._run_requests()
                        if self._pause_requested and not self._stop:
                            self._park()
                        if self._requests:
                            self._run_requests()
                        continue
                    if r == EAGAIN:  # an AP waiting for SIPI may see this
                        continue
                    raise KvmError("KVM_RUN", -r)
                exits += 1
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
