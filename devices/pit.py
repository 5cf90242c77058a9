"""Intel 8254 programmable interval timer (ports 0x40-0x43) and system control port B (0x61).

Why a PC needs it: Linux calibrates the TSC against channel 2 (arch/x86/kernel/tsc.c:
``quick_pit_calibrate`` reads the running count of a mode-0 countdown from 0xffff;
``pit_calibrate_tsc`` polls port 0x61 bit 5 for OUT2 going high) and, without an APIC
timer or HPET, takes its tick from channel 0 (drivers/clocksource/i8253.c: mode 2
periodic, mode 4 one-shot) on ISA IRQ 0.  Without one, a guest with no ``tsc_early_khz``
spends its boot polling an unassigned port (issue 12: 100,006 of 152,139 exits).

Behaviour follows the Intel 8254 datasheet (order no. 231164): "Control Word Format",
"Read-Back Command", "Counter Latch Command", "Mode Definitions" and "Gate Pin
Operations Summary".  Nothing ticks: each channel keeps the host monotonic time its
current run started, and a read computes the count at 1193182 Hz (``PIT_FREQ_HZ``,
Linux's ``PIT_TICK_RATE``).  Deliberate simplifications, invisible to Linux:

* a count is loaded at once, not on the next CLK edge (one 0.84 us tick);
* BCD (control word bit 0) is kept for the status byte but counting is always binary:
  Linux never sets it, and a guest that does sees binary counts (as KVM's PIT);
* mode 2 with a count of 1 (illegal on the chip) counts as 2; mode 3 with an odd count
  reads approximately (high half (N+1)/2 ticks, low half (N-1)/2, counting by two);
* channel 1 (DRAM refresh on a PC) counts but drives nothing.

Gates: channels 0 and 1 are tied high, as on a PC (so modes 1 and 5, which start on a
gate's rising edge, never start there); channel 2's gate is port 0x61 bit 0.

Interrupts: channel 0's OUT is ISA IRQ 0.  Our MADT has no interrupt source override, so
ISA IRQ 0 is GSI 0 (ACPI 6.3 §5.2.12.5: without an override the ISA IRQs are identity-
mapped to the first I/O APIC's inputs).  A PC overrides IRQ 0 to GSI 2 because its I/O
APIC pin 0 carries the 8259's INTR; ours has no such wire (the PIC reaches the CPU only
through LINT0), and GSI 0 is also where KVM's in-kernel PIT raises IRQ 0 under
``--irqchip kernel`` (arch/x86/kvm/i8254.c ``kvm_set_irq(kvm, pit->irq_source_id, 0, ..)``,
routed by irq_comm.c's default table to I/O APIC pin 0): one MADT for both irqchips.
Each rising edge of OUT0 (modes 0, 2, 3, 4) is a ``pulse()`` on that line, made by one
``pit-timer`` thread that exists only while channel 0 still has an edge to come, sleeps
until it, and exits once the channel is reprogrammed to something that never fires.
Edges closer than ``MIN_EDGE_GAP_NS`` are merged (an edge-triggered IRQ can't carry more,
and a guest asking for 600 kHz must not spin a host thread); a late edge is delivered
once, the ones it covered are dropped.  ``stop()`` (the machine's close) ends the thread.

Locking: one ``device`` lock (a Condition, so the timer thread sleeps on it); the line
is pulsed after it is released ("decide under the lock, deliver after it").
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from devices.trace_events import (
    TP_PIT_CONTROL as TP_CONTROL,
    TP_PIT_COUNT as TP_COUNT,
    TP_PIT_IRQ as TP_IRQ,
    TP_PIT_TIMER as TP_TIMER,
    TP_PORT61_WRITE,
)
from vmm.errors import internal_error
from vmm.locks import ordered_condition

PIT_BASE = 0x40
PIT_SIZE = 4                   # 0x40-0x42 counters 0-2, 0x43 control word (write only)
PIT_CONTROL = 3                # offset of the control word register
PORT_B = 0x61                  # system control port B (speaker gate, OUT2, refresh toggle)
PIT_IRQ = 0                    # ISA IRQ 0 = GSI 0: see the module docstring
PIT_FREQ_HZ = 1193182          # include/linux/timex.h PIT_TICK_RATE; 14.31818 MHz / 12
NS = 1_000_000_000
MIN_EDGE_GAP_NS = 50_000       # at most 20 kHz of IRQ 0 edges reach the guest

# Control word (datasheet "Control Word Format"): SC1 SC0 RW1 RW0 M2 M1 M0 BCD
CW_SC_SHIFT = 6
SC_READ_BACK = 3
CW_RW_SHIFT = 4
RW_LATCH, RW_LSB, RW_MSB, RW_LSB_MSB = 0, 1, 2, 3
CW_MODE_SHIFT = 1
CW_BCD = 0x01
# Read-back command (SC = 11): bits 5 and 4 are active low, bits 3..1 select counters 2..0
RB_NO_COUNT = 1 << 5
RB_NO_STATUS = 1 << 4
RB_COUNTER0 = 1 << 1
# Status byte (datasheet "Status Byte"): OUTPUT, NULL COUNT, then the control word's bits 5-0
STATUS_OUT = 0x80
STATUS_NULL_COUNT = 0x40

# Port 0x61 (IBM PC/AT technical reference, "System Control Port B"; Linux names the
# bits in arch/x86/kernel/tsc.c and drivers/input/misc/pcspkr.c)
P61_GATE2 = 0x01               # timer 2 gate
P61_SPEAKER = 0x02             # speaker data enable (OUT2 AND this drives the speaker)
P61_WRITABLE = 0x0F            # bits 2-3: parity / channel check enables, kept, no effect
P61_REFRESH = 0x10             # refresh request toggle (read only)
P61_OUT2 = 0x20                # timer 2 output (read only)


class PitChannel:
    """One counter: its programming and the arithmetic of its count and OUT at a time.
    Not locked: the Pit holds its lock around every call."""

    def __init__(self, index: int):
        self.index = index
        self.gate = index != 2           # channels 0 and 1: tied high; channel 2: port 0x61, reset low
        self.mode = 0                    # effective mode 0-5 (control word modes 6, 7 are 2, 3)
        self.control = (RW_LSB_MSB << CW_RW_SHIFT)   # bits 5-0 of the last control word (status)
        self.rw = RW_LSB_MSB
        self.count = 0x10000             # N: the count in effect (0 written means 65536)
        self.armed = False               # a count was written since the last control word
        self.null_count = True           # status bit 6: written count not loaded yet
        self.triggered = False           # modes 1, 5: a gate rising edge started the count
        self._t0: int | None = None      # ns when the current run began; None: not counting
        self._d0 = 0                     # ticks counted before _t0 (a gate pause)
        self._pending: tuple[int | None, int] | None = None   # modes 2/3: (switch ns, count)
        self._reload: int | None = None  # modes 1/5: a count for the next trigger
        self._write_lsb: int | None = None   # lohi writes: the LSB waiting for its MSB
        self._read_msb = False           # lohi live reads: the next byte is the MSB
        self._latched_count: list[int] = []   # bytes of a latched count, in read order
        self._latched_status: int | None = None

    # ------------------------------------------------------------ time
    def ticks(self, now: int) -> int:
        """PIT clocks counted in the current run (frozen while not counting)."""
        if self._t0 is None:
            return self._d0
        return self._d0 + (now - self._t0) * PIT_FREQ_HZ // NS

    def _tick_time(self, d: int) -> int:
        """The host time (ns) at which the running channel reaches tick ``d``."""
        return self._t0 + -((self._d0 - d) * NS // PIT_FREQ_HZ)     # ceil

    def sync(self, now: int) -> None:
        """Apply what the passage of time decided: a mode 2/3 count written during a period
        takes effect when that period ends (datasheet, modes 2 and 3)."""
        if self._pending is not None:
            at, count = self._pending
            if at is None or now >= at:
                self._pending = None
                self.count = count
                self._d0 = 0
                if self._t0 is not None:
                    self._t0 = at if at is not None else now

    def _counting(self) -> bool:
        if not self.armed:
            return False
        if self.mode in (1, 5):
            return self.triggered
        return self.gate

    def _run(self, now: int) -> None:
        """Start or stop the clock after armed/gate/trigger changed (ticks so far are kept)."""
        counting = self._counting()
        if counting and self._t0 is None:
            self._t0 = now
        elif not counting and self._t0 is not None:
            self._d0 = self.ticks(now)
            self._t0 = None

    # ------------------------------------------------------------ state at a time
    def value_out(self, now: int) -> tuple[int, bool]:
        """(the counting element's 16-bit value, OUT) at ``now``."""
        n, mode = self.count, self.mode
        if not self.armed:                        # control word written, no count yet
            return n & 0xFFFF, mode != 0         # OUT's initial state: low in mode 0 only
        d = self.ticks(now)
        if mode == 0:
            return (n - d) & 0xFFFF, d >= n
        if mode in (1, 5) and not self.triggered:
            return n & 0xFFFF, True
        if mode == 1:
            return (n - d) & 0xFFFF, d >= n
        if mode in (4, 5):
            return (n - d) & 0xFFFF, d != n      # one clock low at terminal count
        if not self.gate:                         # modes 2, 3: gate low forces OUT high
            return n & 0xFFFF, True
        p = d % n
        if mode == 2:
            return n - p, p != n - 1              # low for the clock where the count is 1
        half = (n + 1) // 2                       # mode 3: high for ceil(N/2), low for floor(N/2)
        q = p if p < half else p - half
        return max((n & ~1) - 2 * q, 0) & 0xFFFF, p < half

    def next_edge(self, after: int) -> int | None:
        """The host time of OUT's next rising edge strictly after ``after`` (the IRQ 0
        edges of channel 0), None if the current programming never makes one."""
        if self._t0 is None:
            return None
        n, mode = self.count, self.mode
        d_after = self.ticks(after) if after >= self._t0 else self._d0
        if mode in (0, 1, 4, 5):                  # one-shot: at terminal count (4/5: the strobe)
            t = self._tick_time(n)
            return t if t > after and d_after <= n else None
        k = d_after // n + 1                      # modes 2, 3: every N clocks
        t = self._tick_time(k * n)
        while t <= after:
            k += 1
            t = self._tick_time(k * n)
        if self._pending is not None and self._pending[0] is not None and t > self._pending[0]:
            return self._pending[0]               # the new count's period starts there
        return t

    # ------------------------------------------------------------ programming
    def control_word(self, value: int, now: int) -> None:
        """Datasheet: a control word resets the counter's logic, sets OUT to the mode's
        initial state, and stops counting until a count is written."""
        self.sync(now)
        rw = (value >> CW_RW_SHIFT) & 3
        mode = (value >> CW_MODE_SHIFT) & 7
        self.control = value & 0x3F
        self.rw = rw
        self.mode = mode if mode < 6 else mode - 4
        self.armed = False
        self.null_count = True
        self.triggered = False
        self._t0, self._d0 = None, 0
        self._pending = self._reload = None
        self._write_lsb = None
        self._read_msb = False
        self._latched_count = []
        self._latched_status = None

    def write_count(self, byte: int, now: int) -> bool:
        """A byte written to the counter's port; True if it completed a count."""
        self.sync(now)
        if self.rw == RW_LSB:
            value = byte
        elif self.rw == RW_MSB:
            value = byte << 8
        elif self._write_lsb is None:
            self._write_lsb = byte
            if self.mode == 0 and self.armed:     # mode 0: the first byte stops counting, OUT low
                self._d0, self._t0 = 0, None
                self.armed = False
            return False
        else:
            value = self._write_lsb | byte << 8
            self._write_lsb = None
        self._load(value or 0x10000, now)
        return True

    def _load(self, n: int, now: int) -> None:
        if self.mode == 2 and n == 1:
            n = 2                                 # illegal on the chip: see the docstring
        running = self.armed and self._t0 is not None
        self.null_count = False
        if self.mode in (2, 3) and running:       # takes effect at the end of this period
            d = self.ticks(now)
            end = (d // self.count + 1) * self.count
            self._pending = (self._tick_time(end), n)
            return
        if self.mode in (1, 5) and self.armed:    # kept for the next trigger
            self._reload = n
            return
        self.count = n
        self.armed = True
        self._pending = None
        self._d0, self._t0 = 0, None
        self._run(now)

    def set_gate(self, level: bool, now: int) -> None:
        """Datasheet "Gate Pin Operations Summary"."""
        self.sync(now)
        rising = level and not self.gate
        self.gate = level
        if rising and self.armed:
            if self.mode in (1, 5):               # trigger (and retrigger): count from N again
                if self._reload is not None:
                    self.count, self._reload = self._reload, None
                self.triggered = True
                self._d0, self._t0 = 0, None
            elif self.mode in (2, 3):             # rising edge reloads the counter
                if self._pending is not None:
                    self.count = self._pending[1]
                    self._pending = None
                self._d0, self._t0 = 0, None
        self._run(now)

    # ------------------------------------------------------------ reading
    def _count_bytes(self, value: int) -> list[int]:
        if self.rw == RW_LSB:
            return [value & 0xFF]
        if self.rw == RW_MSB:
            return [value >> 8]
        return [value & 0xFF, value >> 8]

    def latch_count(self, now: int) -> None:
        """Counter latch command; ignored while a latched count is unread (datasheet)."""
        self.sync(now)
        if not self._latched_count:
            self._latched_count = self._count_bytes(self.value_out(now)[0])

    def latch_status(self, now: int) -> None:
        self.sync(now)
        if self._latched_status is None:
            out = self.value_out(now)[1]
            self._latched_status = ((STATUS_OUT if out else 0) | (STATUS_NULL_COUNT if self.null_count else 0)
                                    | self.control)

    def read(self, now: int) -> int:
        """A latched status first, then a latched count, else the live count."""
        self.sync(now)
        if self._latched_status is not None:
            v, self._latched_status = self._latched_status, None
            return v
        if self._latched_count:
            return self._latched_count.pop(0)
        value = self.value_out(now)[0]
        if self.rw == RW_LSB:
            return value & 0xFF
        if self.rw == RW_MSB:
            return value >> 8
        msb, self._read_msb = self._read_msb, not self._read_msb
        return value >> 8 if msb else value & 0xFF


class Pit:
    """The 8254 at 0x40-0x43.  ``irq``: channel 0's line (an ``IrqLine``: ``pulse()``);
    ``clock``: host monotonic ns (tests pass their own)."""

    def __init__(self, irq, clock: Callable[[], int] = time.monotonic_ns):
        self._irq = irq
        self._clock = clock
        self._cv = ordered_condition("device")
        self.channels = [PitChannel(i) for i in range(3)]
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._last_edge = 0              # channel 0: the latest edge delivered (or skipped)
        self.edges = 0                   # IRQ 0 edges delivered (tests, stats)
        self._p61 = 0                    # port 0x61 bits 0-3 as written
        self._refresh = 0                # port 0x61 bit 4

    # ------------------------------------------------------------ ports
    def read(self, offset: int, size: int) -> int:
        if offset == PIT_CONTROL:
            return 0xFF                  # the control word register is write-only
        with self._cv:
            return self.channels[offset].read(self._clock())

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        with self._cv:
            now = self._clock()
            if offset == PIT_CONTROL:
                ch0_changed = self._control(value, now)
            else:
                ch = self.channels[offset]
                loaded = ch.write_count(value, now)
                if loaded and TP_COUNT.enabled:
                    TP_COUNT.emit(ch=offset, count=ch._pending[1] if ch._pending else ch.count, mode=ch.mode)
                ch0_changed = offset == 0
            if ch0_changed:
                self._channel0_changed(now)

    def _control(self, value: int, now: int) -> bool:
        """A control word, a latch or a read-back; True if it reprogrammed channel 0."""
        sc = value >> CW_SC_SHIFT
        if TP_CONTROL.enabled:
            TP_CONTROL.emit(value=value)
        if sc == SC_READ_BACK:
            for i, ch in enumerate(self.channels):
                if value & (RB_COUNTER0 << i):
                    if not value & RB_NO_STATUS:
                        ch.latch_status(now)
                    if not value & RB_NO_COUNT:
                        ch.latch_count(now)
            return False
        ch = self.channels[sc]
        if (value >> CW_RW_SHIFT) & 3 == RW_LATCH:
            ch.latch_count(now)
            return False
        ch.control_word(value, now)
        return sc == 0

    # ------------------------------------------------------------ port 0x61 (PortB)
    def port61_read(self) -> int:
        with self._cv:
            now = self._clock()
            ch = self.channels[2]
            ch.sync(now)
            self._refresh ^= P61_REFRESH
            return self._p61 | self._refresh | (P61_OUT2 if ch.value_out(now)[1] else 0)

    def port61_write(self, value: int) -> None:
        with self._cv:
            self._p61 = value & P61_WRITABLE
            self.channels[2].set_gate(bool(value & P61_GATE2), self._clock())

    # ------------------------------------------------------------ channel 0's IRQ edges
    def _channel0_changed(self, now: int) -> None:
        """Lock held: channel 0 was reprogrammed.  Edges count from now; the timer thread
        is started if an edge is to come, or woken to look again."""
        self._last_edge = now
        if self._stopped:
            return
        if self._thread is None:
            if self.channels[0].next_edge(now) is None:
                return
            self._thread = threading.Thread(target=self._timer, name="pit-timer", daemon=True)
            self._thread.start()
            if TP_TIMER.enabled:
                TP_TIMER.emit(event="start", mode=self.channels[0].mode, count=self.channels[0].count)
        else:
            self._cv.notify_all()

    def _timer(self) -> None:
        try:
            while self._wait_edge():
                self.edges += 1
                if TP_IRQ.enabled:
                    TP_IRQ.emit(edges=self.edges)
                self._irq.pulse()        # no lock held: the line may reach the I/OAPIC and the PIC
        except BaseException as e:  # noqa: BLE001 - reported; the guest just loses its tick
            internal_error("pit-timer", e)
            with self._cv:
                self._thread = None

    def _wait_edge(self) -> bool:
        """Sleep until channel 0's next edge; False (and the thread is forgotten) once none
        is to come or the PIT is stopped."""
        with self._cv:
            while True:
                ch = self.channels[0]
                now = self._clock()
                ch.sync(now)
                edge = None if self._stopped else ch.next_edge(self._last_edge)
                if edge is None:
                    self._thread = None
                    if TP_TIMER.enabled:
                        TP_TIMER.emit(event="stop", mode=ch.mode, count=ch.count)
                    return False
                edge = max(edge, self._last_edge + MIN_EDGE_GAP_NS)
                if edge <= now:
                    self._last_edge = now            # edges this one covers are merged into it
                    return True
                self._cv.wait((edge - now) / NS)

    def stop(self, timeout: float = 2.0) -> None:
        """The VM is ending: no more edges; waits for the thread to finish a pulse."""
        with self._cv:
            self._stopped = True
            t = self._thread
            self._cv.notify_all()
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    # ------------------------------------------------------------ snapshot (ARCHITECTURE.md "Snapshots")
    def save(self) -> dict:
        """Primary: every channel's registers and its times (host monotonic ns: a restore on
        the same host boot sees the counters as having run meanwhile), port 0x61."""
        with self._cv:
            now = self._clock()
            for ch in self.channels:
                ch.sync(now)
            return {"channels": [dict(vars(ch)) for ch in self.channels], "p61": self._p61,
                    "refresh": self._refresh, "edges": self.edges}

    def restore(self, state: dict) -> None:
        with self._cv:
            for ch, s in zip(self.channels, state["channels"]):
                vars(ch).update({k: tuple(v) if isinstance(v, list) and k in ("_pending",) else v
                                 for k, v in s.items()})
            self._p61, self._refresh, self.edges = state["p61"], state["refresh"], state["edges"]

    def rebuilt(self) -> None:
        """Derived: the timer thread, if channel 0 has an edge to come (counted from now)."""
        with self._cv:
            self._channel0_changed(self._clock())

    @property
    def timer_running(self) -> bool:
        return self._thread is not None


class PortB:
    """Port 0x61, system control port B: channel 2's gate and the speaker enable (read
    back), OUT2 (bit 5) and the refresh toggle (bit 4), which flips on every read so a
    delay loop polling it for a change always sees one (a real one flips every 15 us).
    The state is the Pit's, under its lock."""

    def __init__(self, pit: Pit):
        self._pit = pit

    def read(self, offset: int, size: int) -> int:
        return self._pit.port61_read()

    def write(self, offset: int, size: int, value: int) -> None:
        if TP_PORT61_WRITE.enabled:
            TP_PORT61_WRITE.emit(value=value & 0xFF)
        self._pit.port61_write(value)


__all__ = ["Pit", "PitChannel", "PortB", "PIT_BASE", "PIT_SIZE", "PIT_IRQ", "PIT_FREQ_HZ", "PORT_B"]
