"""Xen time: system time, pvclock (vcpu_time_info), wallclock, and vCPU timers.

*System time* is nanoseconds since the domain started (Xen's NOW() for the
guest).  The guest reads it without exits through the pvclock in its
vcpu_info (public/xen.h struct vcpu_time_info):
``ns = system_time + (((tsc - tsc_timestamp) << shift) * mul >> 32)`` with a
negative shift meaning a right shift.  We publish it from KVM_GET_TSC_KHZ and
one guest-TSC sample (KVM_GET_MSRS(IA32_TSC), taken before the vCPUs run),
with XEN_PVCLOCK_TSC_STABLE_BIT: the guest TSC is constant-rate.

*Wallclock* (shared_info wc_*) is the UTC time at system time 0.

``TimePublisher`` writes both into shared_info/vcpu_info (through SharedInfo's
public ``si_at``/``vcpu_info_at``); with KVM's acceleration KVM writes the
pvclock of the vcpu_infos it knows, so only the wallclock is ours.

*Timers* (VCPUOP_set_singleshot_timer, set_timer_op, periodic timers) fire
VIRQ_TIMER on their vCPU from one timer thread.
"""

from __future__ import annotations

import heapq
import itertools
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, Callable

from vmm.errors import internal_error
from vmm.locks import ordered_condition
from xen import abi
from xen.trace_events import (
    TP_XEN_TIMER_SET as TP_TIMER_SET,
    TP_XEN_TIMER_STOP as TP_TIMER_STOP,
    TP_XEN_TIMER_FIRE as TP_TIMER_FIRE,
    TP_XEN_PVCLOCK as TP_PVCLOCK,
)

if TYPE_CHECKING:
    from xen.shared_info import SharedInfo

IA32_TSC = 0x10
NSEC = 1_000_000_000
MIN_PERIOD_NS = 1_000_000          # xen/common/domain.c: periods under 1 ms are -EINVAL
MAX_WAIT_S = 3600.0                # the timer thread wakes at least this often (Condition.wait
                                   # raises OverflowError past threading.TIMEOUT_MAX)


def time_scale(tsc_hz: int) -> tuple[int, int]:
    """(mul, shift) such that ns = ((tsc << shift) * mul) >> 32 (shift may be negative).

    The same normalisation as Xen's set_time_scale (xen/arch/x86/time.c)."""
    shift = 0
    tps64 = tsc_hz
    base = NSEC
    while tps64 > base * 2:
        tps64 >>= 1
        shift -= 1
    tps32 = tps64 & 0xFFFFFFFF
    while tps32 <= base:
        tps32 <<= 1
        shift += 1
    mul = (base << 32) // tps32
    return mul & 0xFFFFFFFF, shift


class XenTime:
    """System time and the pvclock parameters, from the guest TSC's rate (kHz) and one
    sample of it (``tsc0``) paired with our clock now."""

    def __init__(self, tsc_khz: int, tsc0: int):
        self.tsc_khz = tsc_khz
        self.tsc0 = tsc0
        self.mono0 = time.monotonic_ns()
        self.wall0 = time.time_ns()
        self.mul, self.shift = time_scale(self.tsc_khz * 1000)
        self._versions: dict[tuple, int] = {}
        self.offset = 0

    @classmethod
    def from_vcpu(cls, vcpu_fd) -> "XenTime":
        """From KVM_GET_TSC_KHZ and the guest TSC of a vCPU that isn't running yet."""
        return cls(vcpu_fd.get_tsc_khz(), vcpu_fd.get_msrs([IA32_TSC])[IA32_TSC])

    def follow_kvm_clock(self, vm_fd) -> None:
        """With KVM's Xen acceleration KVM writes the pvclock (from its kvmclock, which
        starts at VM creation): our system time must be the same clock."""
        mono = time.monotonic_ns()
        self.offset = vm_fd.get_clock() - (mono - self.mono0)

    def now(self) -> int:
        """System time in ns."""
        return time.monotonic_ns() - self.mono0 + self.offset

    def time_info(self, version: int) -> dict:
        # The TSC advanced from tsc0 for the time since its sample; system time
        # is that plus ``offset`` (non-zero when following KVM's clock).
        elapsed = time.monotonic_ns() - self.mono0
        tsc = self.tsc0 + elapsed * self.tsc_khz // 1_000_000
        return dict(version=version, pad0=0, tsc_timestamp=tsc, system_time=elapsed + self.offset,
                    tsc_to_system_mul=self.mul, tsc_shift=self.shift,
                    flags=abi.XEN_PVCLOCK_TSC_STABLE_BIT, pad1=b"\0\0")

    def publish(self, vcpu: int, writer: Callable[[bytes], None], key) -> None:
        """Write a vcpu_time_info with the odd/even version protocol."""
        struct = abi.layout(abi.vcpu_time_info, "64")   # identical in both ABIs
        v = self._versions.get(key, 0) + 1          # odd: update in progress
        info = self.time_info(v)
        writer(struct.build(info))
        info["version"] = v + 1
        writer(struct.build(info))                       # even: consistent
        self._versions[key] = v + 1
        if TP_PVCLOCK.enabled:
            TP_PVCLOCK.emit(vcpu=vcpu, system_time=info["system_time"], tsc=info["tsc_timestamp"],
                            mul=self.mul, shift=self.shift)

    # snapshot: the rate, one (guest TSC, system time) pair, and the wallclock at system time 0
    def save(self, guest_tsc: int) -> dict:
        """``guest_tsc``: vCPU 0's TSC now (the vCPUs paused)."""
        return {"tsc_khz": self.tsc_khz, "tsc": guest_tsc, "now": self.now(), "wc0": self.wall0 - self.offset}

    def restore(self, state: dict, guest_tsc: int) -> None:
        """System time continues from the saved pair: the guest's TSC is ``guest_tsc`` now
        (restored by KVM_SET_MSRS a moment ago, and it went on counting since)."""
        self.tsc_khz = state["tsc_khz"]
        self.mul, self.shift = time_scale(self.tsc_khz * 1000)
        self.tsc0 = guest_tsc
        self.mono0 = time.monotonic_ns()
        self.offset = state["now"] + (guest_tsc - state["tsc"]) * 1_000_000 // self.tsc_khz
        self.wall0 = state["wc0"] + self.offset

    def wallclock(self) -> tuple[int, int]:
        """(sec, nsec) of UTC at system time 0 (``offset`` moves system time 0 to KVM's)."""
        return divmod(self.wall0 - self.offset, NSEC)


class TimePublisher:
    """Time into the guest's pages: wallclock into shared_info, pvclock into vcpu_info
    (``kvm_pvclock``: KVM writes those itself)."""

    def __init__(self, clock: XenTime, shared: "SharedInfo", kvm_pvclock: bool = False):
        self.clock = clock
        self.shared = shared
        self.kvm_pvclock = kvm_pvclock

    def write_wallclock(self) -> None:
        """shared_info wc_*, with the odd/even wc_version protocol."""
        sec, nsec = self.clock.wallclock()
        lay = self.shared.layout

        def put(offset: int, value: int) -> None:
            mem, addr = self.shared.si_at(offset)
            mem.write(addr, value.to_bytes(4, "little"))
        mem, addr = self.shared.si_at(lay.wc_version)
        ver = (int.from_bytes(mem.read(addr, 4), "little") | 1) + 1
        put(lay.wc_version, ver - 1)                         # odd: update in progress
        put(lay.wc_sec, sec & 0xFFFFFFFF)
        put(lay.wc_nsec, nsec)
        if lay.wc_sec_hi is not None:
            put(lay.wc_sec_hi, sec >> 32)
        put(lay.wc_version, ver)                             # even

    def publish(self, vcpu: int) -> None:
        """Refresh vcpu_info.time of ``vcpu`` (if it has a vcpu_info)."""
        if self.kvm_pvclock:
            return          # KVM keeps the pvclock of the vcpu_info it knows about
        at = self.shared.vcpu_info_at(vcpu, self.shared.layout.time)
        if at is None:
            return
        mem, addr = at
        self.clock.publish(vcpu, lambda data: mem.write(addr, data), ("vi", vcpu))


class Timers:
    """Singleshot and periodic timers of every vCPU, one thread for all; a timer that
    fires calls ``on_fire(vcpu)`` (from the timer thread, no lock held)."""

    def __init__(self, clock: XenTime, on_fire: Callable[[int], None]):
        self.on_fire = on_fire
        self.clock = clock
        self._cv = ordered_condition("xen.timers")
        self._heap: list = []
        self._seq = itertools.count()
        self.singleshot: dict[int, int] = {}    # vcpu -> deadline (ns); the entry is live if it matches
        self.periodic: dict[int, tuple[int, int]] = {}   # vcpu -> (period, next)
        self._stop = False
        self._held = False                      # a snapshot in progress: nothing fires
        self._thread = threading.Thread(target=self._run, name="xen-timers", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()

    # snapshot
    def hold(self) -> None:
        """Fire nothing until ``release`` (a snapshot reads timers and memory meanwhile)."""
        with self._cv:
            self._held = True

    def release(self) -> None:
        with self._cv:
            self._held = False
            self._cv.notify()

    def save(self) -> dict:
        """The live timers' deadlines, in system time (which a restore continues)."""
        with self._cv:
            return {"singleshot": {str(v): d for v, d in self.singleshot.items()},
                    "periodic": {str(v): list(p) for v, p in self.periodic.items()}}

    def restore(self, state: dict) -> None:
        with self._cv:
            self.singleshot = {int(v): d for v, d in state["singleshot"].items()}
            self.periodic = {int(v): tuple(p) for v, p in state["periodic"].items()}
            self._heap = ([(d, next(self._seq), v, "singleshot") for v, d in self.singleshot.items()]
                          + [(nxt, next(self._seq), v, "periodic") for v, (_, nxt) in self.periodic.items()])
            heapq.heapify(self._heap)
            self._cv.notify()

    def set_singleshot(self, vcpu: int, deadline: int) -> None:
        """``deadline`` is Xen's s_time_t: a negative one is in the past and fires at once."""
        with self._cv:
            self.singleshot[vcpu] = deadline
            self._push(deadline, vcpu, "singleshot")
        if TP_TIMER_SET.enabled:
            TP_TIMER_SET.emit(vcpu=vcpu, kind="singleshot", deadline=deadline, delta=deadline - self.clock.now())

    def take_singleshot(self, vcpu: int) -> int | None:
        """Stop the vCPU's singleshot timer and return its deadline (None: not armed): the
        timer moves to KVM (xen/kvm_timer.py)."""
        with self._cv:
            return self.singleshot.pop(vcpu, None)

    def stop_singleshot(self, vcpu: int) -> None:
        with self._cv:
            self.singleshot.pop(vcpu, None)
        if TP_TIMER_STOP.enabled:
            TP_TIMER_STOP.emit(vcpu=vcpu, kind="singleshot")

    def set_periodic(self, vcpu: int, period: int) -> None:
        first = self.clock.now() + period
        with self._cv:
            self.periodic[vcpu] = (period, first)
            self._push(first, vcpu, "periodic")
        if TP_TIMER_SET.enabled:
            TP_TIMER_SET.emit(vcpu=vcpu, kind="periodic", deadline=first, delta=period)

    def stop_periodic(self, vcpu: int) -> None:
        with self._cv:
            self.periodic.pop(vcpu, None)
        if TP_TIMER_STOP.enabled:
            TP_TIMER_STOP.emit(vcpu=vcpu, kind="periodic")

    def _push(self, deadline: int, vcpu: int, kind: str) -> None:
        """Under ``_cv``.  Stopped and re-armed timers leave stale heap entries behind
        (skipped when they come due); a guest re-arming far-future timers would grow
        the heap without bound, so it is rebuilt from the live timers when mostly stale."""
        heapq.heappush(self._heap, (deadline, next(self._seq), vcpu, kind))
        live = len(self.singleshot) + len(self.periodic)
        if len(self._heap) > 4 * live + 64:
            self._heap = ([(d, next(self._seq), v, "singleshot") for v, d in self.singleshot.items()]
                          + [(nxt, next(self._seq), v, "periodic") for v, (_, nxt) in self.periodic.items()])
            heapq.heapify(self._heap)
        self._cv.notify()

    def _run(self) -> None:
        while True:
            fire = []
            with self._cv:
                while not self._stop:
                    if self._held:
                        self._cv.wait()
                        continue
                    now = self.clock.now()
                    if self._heap and self._heap[0][0] <= now:
                        deadline, _, vcpu, kind = heapq.heappop(self._heap)
                        if kind == "singleshot":
                            if self.singleshot.get(vcpu) != deadline:
                                continue                      # stopped or re-armed
                            del self.singleshot[vcpu]
                        else:
                            cur = self.periodic.get(vcpu)
                            if cur is None or cur[1] != deadline:
                                continue
                            period = cur[0]
                            nxt = deadline + period
                            if nxt <= now:                    # fell behind: skip missed ticks
                                nxt = now + period
                            self.periodic[vcpu] = (period, nxt)
                            self._push(nxt, vcpu, "periodic")
                        fire.append((vcpu, kind, now - deadline))
                        break
                    timeout = min((self._heap[0][0] - now) / NSEC, MAX_WAIT_S) if self._heap else None
                    self._cv.wait(timeout)
                if self._stop:
                    return
            for vcpu, kind, late in fire:   # outside our lock: delivery takes the port lock
                if TP_TIMER_FIRE.enabled:
                    TP_TIMER_FIRE.emit(vcpu=vcpu, kind=kind, late=late)
                try:
                    self.on_fire(vcpu)
                except Exception as e:  # noqa: BLE001 - a VMM bug must not stop every vCPU's timers
                    internal_error(f"xen-timers (vcpu{vcpu} {kind})", e)
