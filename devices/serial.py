"""16550A UART (COM1: ports 0x3f8-0x3ff, IRQ 4).

Register behaviour follows the National/TI PC16550D data sheet, as Linux's
8250 driver probes it (scratch register; FCR bit 0 makes IIR bits 7:6 read 11,
which drivers/tty/serial/8250/8250_port.c autoconfig takes for a 16550A and
then gives a 16-byte TX load).  Output bytes go to a ``write(bytes)`` callable;
input arrives via ``feed(bytes)`` from the console thread.  The IRQ line follows
"an enabled interrupt is pending" and is driven through the IrqChip on every
change.

Receive: console input waits on "the wire" (``backlog``, up to RX_QUEUE_MAX bytes;
beyond, the overrun bit) and moves into the receiver as there is room: the RBR
alone with FIFOs off, the 16-byte RX FIFO with them on.  With the FIFO on, the
received-data interrupt (IIR 0x4) waits for the trigger level (FCR bits 7:6: 1,
4, 8, 14 bytes) and fewer bytes raise the character timeout interrupt (IIR 0xC)
once nothing was received or read for 4 character times (data sheet, "FIFO
Interrupt Mode Operation"; the character time from the divisor and LCR, at a
1.8432 MHz clock).  A ``threading.Timer`` ("serial-timeout") raises the line
then, armed only while bytes wait below the trigger with the interrupt enabled.

Transmit: a written byte leaves at once (to the console), so the TX FIFO and the
shift register are always empty again by the next access: LSR THRE and TEMT
read 1 and, with the FIFO on, the guest may write up to 16 bytes per THRE it
sees (Linux's serial8250_console_fifo_write and serial8250_tx_chars do: a line
then costs one LSR read per 16 bytes instead of one per byte).  The THRE
interrupt is raised after each write and cleared by an IIR read that reports
it or by the next write, as the data sheet has it.

Coalesced THR writes: given a ``tx_zone`` (vmm/coalesced.py), THR writes go into
KVM's coalesced ring instead of exiting while nothing the guest can see depends
on when they are handled: THRE interrupts off (IER bit 1) and no loopback (MCR
bit 4).  A byte then costs the guest one exit (the LSR read before it, which
replays the ring first) instead of two.  Linux's console (serial8250_console_write)
clears IER for the whole line, so every printk byte takes that path; its tty
output runs with THRE interrupts on and exits as before.

Cached LSR reads: given an ``lsr_read`` (vmm/port_cache.py), the LSR's value is
published after every change, so the guest's polls are answered in C without
Python; not while an overrun is flagged (the read clears it).  Together with the
coalesced THR a printk byte costs no Python until the ring is replayed, a batch
at a time (``write_thr``).

Changing FCR bit 0 clears both FIFOs; other FCR bits need bit 0 set (data
sheet).  DMA mode (bit 3) is kept and has no effect; no modem-status
interrupts (the modem lines never change).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

from devices.trace_events import (
    TP_SERIAL_TX as TP_TX,
    TP_SERIAL_RX as TP_RX,
    TP_SERIAL_IRQ as TP_IRQ,
    TP_SERIAL_REG as TP_REG,
)
from vmm.locks import ordered_lock

COM1_BASE = 0x3F8
COM1_IRQ = 4

# registers (offsets)
RBR_THR_DLL = 0
IER_DLM = 1
IIR_FCR = 2
LCR = 3
MCR = 4
LSR = 5
MSR = 6
SCR = 7

IER_RDI = 0x01     # received data available (and, with the FIFO, the character timeout)
IER_THRI = 0x02    # THR empty
IER_RLSI = 0x04    # receiver line status
IER_MSI = 0x08     # modem status

IIR_NO_INT = 0x01
IIR_MSI = 0x00
IIR_THRI = 0x02
IIR_RDI = 0x04
IIR_RLSI = 0x06
IIR_CTI = 0x0C     # character timeout (FIFO mode only)
IIR_ID_MASK = 0x0F
IIR_FIFO_ENABLED = 0xC0

LCR_WLEN_MASK = 0x03   # word length - 5
LCR_STOP2 = 0x04
LCR_PARITY = 0x08
LCR_DLAB = 0x80
MCR_LOOP = 0x10
LSR_DR = 0x01
LSR_OE = 0x02
LSR_THRE = 0x20
LSR_TEMT = 0x40
FCR_FIFO_ENABLE = 0x01
FCR_CLEAR_RX = 0x02
FCR_CLEAR_TX = 0x04
FCR_KEPT = 0xC9                       # trigger level, DMA mode, enable
FCR_TRIGGER_SHIFT = 6
RX_TRIGGER = (1, 4, 8, 14)            # FCR bits 7:6 (data sheet, Table "FIFO Control Register")
FIFO_SIZE = 16
UART_CLOCK_HZ = 1843200               # the PC's UART crystal: 115200 baud at divisor 1
MAX_CHAR_TIMEOUT_S = 0.1              # a huge divisor must not hold typed input for seconds

RX_QUEUE_MAX = 1 << 16     # bytes buffered from the console before we drop


class Serial:
    """``clock``: seconds, monotonic (tests pass their own)."""

    def __init__(self, output: Callable[[bytes], None], set_irq: Callable[[bool], None], name: str = "serial0",
                 clock: Callable[[], float] = time.monotonic, tx_zone=None, lsr_read=None):
        self.name = name
        self._out = output
        self._set_irq = set_irq
        self._clock = clock
        self._lock = ordered_lock("device")
        self.backlog: deque[int] = deque()   # "the wire": console input not yet received
        self.rx: deque[int] = deque()        # the receiver: RBR (1 byte) or the RX FIFO (16)
        self.ier = 0
        self.lcr = 0x03
        self.mcr = 0x08
        self.lsr = LSR_THRE | LSR_TEMT
        self.msr = 0xB0      # DCD, DSR, CTS asserted
        self.scr = 0
        self.dll = 0x0C      # 9600 baud
        self.dlm = 0
        self.fcr = 0
        self.thr_ipending = False
        self._irq_level = False
        self._rx_activity = 0.0              # last byte received or RBR read (character timeout)
        self._timer: threading.Timer | None = None
        self._stopped = False
        self._tx_zone = tx_zone              # vmm.coalesced.Zone for the THR port, or None
        self._lsr_read = lsr_read            # vmm.port_cache.CachedRead for the LSR port, or None
        if tx_zone is not None:
            tx_zone.write_many = self.write_thr
        self._coalesce_tx()
        self._publish_lsr()

    # ---------------------------------------------------------- receiver
    @property
    def fifo_enabled(self) -> bool:
        return bool(self.fcr & FCR_FIFO_ENABLE)

    def _trigger(self) -> int:
        return RX_TRIGGER[self.fcr >> FCR_TRIGGER_SHIFT] if self.fifo_enabled else 1

    def _receive(self) -> None:
        """Move bytes from the wire into the receiver while it has room."""
        room = (FIFO_SIZE if self.fifo_enabled else 1) - len(self.rx)
        if room > 0 and self.backlog:
            for _ in range(min(room, len(self.backlog))):
                self.rx.append(self.backlog.popleft())
            self._rx_activity = self._clock()

    def char_timeout(self) -> float:
        """4 character times at the programmed rate (start bit, word, parity, stop bits)."""
        divisor = (self.dlm << 8 | self.dll) or 1
        bits = 1 + 5 + (self.lcr & LCR_WLEN_MASK) + (1 if self.lcr & LCR_PARITY else 0) + \
            (2 if self.lcr & LCR_STOP2 else 1)
        return min(4 * bits * 16 * divisor / UART_CLOCK_HZ, MAX_CHAR_TIMEOUT_S)

    def _below_trigger(self) -> bool:
        return self.fifo_enabled and 0 < len(self.rx) < self._trigger()

    def _timed_out(self) -> bool:
        return self._below_trigger() and self._clock() - self._rx_activity >= self.char_timeout()

    # ---------------------------------------------------------- interrupt logic
    def _iir(self) -> int:
        fifo = IIR_FIFO_ENABLED if self.fifo_enabled else 0
        if self.ier & IER_RLSI and self.lsr & LSR_OE:
            return IIR_RLSI | fifo
        if self.ier & IER_RDI and len(self.rx) >= self._trigger():
            return IIR_RDI | fifo
        if self.ier & IER_RDI and self._timed_out():
            return IIR_CTI | fifo
        if self.ier & IER_THRI and self.thr_ipending:
            return IIR_THRI | fifo
        return IIR_NO_INT | fifo

    def _update_irq(self) -> None:
        """Call with the lock held; drives the line only on a change, and arms the
        character-timeout timer while bytes wait below the trigger level."""
        iir = self._iir()
        level = not (iir & IIR_NO_INT)
        if level != self._irq_level:
            self._irq_level = level
            if TP_IRQ.enabled:
                TP_IRQ.emit(level=int(level), iir=iir)
            self._set_irq(level)
        if (self._timer is None and not self._stopped and self.ier & IER_RDI and self._below_trigger()
                and not self._timed_out()):
            delay = self._rx_activity + self.char_timeout() - self._clock()
            self._timer = threading.Timer(max(delay, 0.0), self._timeout)
            self._timer.name = "serial-timeout"
            self._timer.daemon = True
            self._timer.start()

    def _timeout(self) -> None:
        with self._lock:
            self._timer = None
            if not self._stopped:
                self._update_irq()          # raises the CTI, or re-arms for activity since

    def stop(self) -> None:
        """The VM is ending: no timer fires into it any more."""
        with self._lock:
            self._stopped = True
            t, self._timer = self._timer, None
        if t is not None:
            t.cancel()

    # ---------------------------------------------------------- bus interface
    def read(self, offset: int, size: int) -> int:
        with self._lock:
            v = self._read(offset)
            self._publish_lsr()                 # before the line moves (see _publish_lsr)
            if self.ier or self._irq_level:     # else nothing can raise the line or arm the timer
                self._update_irq()
        if TP_REG.enabled:
            TP_REG.emit(dir="read", reg=offset, value=v)
        return v

    def _read(self, offset: int) -> int:
        if offset == RBR_THR_DLL:
            if self.lcr & LCR_DLAB:
                return self.dll
            v = self.rx.popleft() if self.rx else 0
            self._rx_activity = self._clock()   # a read restarts the character timeout
            self._receive()
            return v
        if offset == IER_DLM:
            return self.dlm if self.lcr & LCR_DLAB else self.ier
        if offset == IIR_FCR:
            v = self._iir()
            if v & IIR_ID_MASK == IIR_THRI:
                self.thr_ipending = False   # reading IIR acknowledges THRE
            return v
        if offset == LCR:
            return self.lcr
        if offset == MCR:
            return self.mcr
        if offset == LSR:
            v = self.lsr | (LSR_DR if self.rx else 0)
            self.lsr &= ~LSR_OE
            return v
        if offset == MSR:
            if self.mcr & MCR_LOOP:   # loopback: outputs feed the inputs
                m = self.mcr
                return ((m & 0x02) << 3) | ((m & 0x01) << 5) | ((m & 0x04) << 4) | ((m & 0x08) << 4)
            return self.msr
        return self.scr

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if TP_REG.enabled and offset != RBR_THR_DLL:
            TP_REG.emit(dir="write", reg=offset, value=value)
        with self._lock:
            out = self._write(offset, value)
            self._publish_lsr()
            if self.ier or self._irq_level:     # (as in read: IER 0 and the line low stay so)
                self._update_irq()
        if out is not None:
            if TP_TX.enabled:
                TP_TX.emit(byte=out)
            self._out(bytes((out,)))

    def _write(self, offset: int, value: int) -> int | None:
        if offset == RBR_THR_DLL:
            if self.lcr & LCR_DLAB:
                self.dll = value
                return None
            # The byte (or the FIFO's content) leaves at once: THR empty again, so THRE
            # is pending again; the write itself cleared the one before (data sheet).
            self.thr_ipending = True
            if self.mcr & MCR_LOOP:
                self._push(value)
                self._receive()
                return None
            return value
        if offset == IER_DLM:
            if self.lcr & LCR_DLAB:
                self.dlm = value
            else:
                if value & IER_THRI and not self.ier & IER_THRI:
                    self.thr_ipending = True  # enabling THRI with THR empty raises it
                self.ier = value & 0x0F
                self._coalesce_tx()
        elif offset == IIR_FCR:
            self._fcr(value)
        elif offset == LCR:
            self.lcr = value
        elif offset == MCR:
            self.mcr = value & 0x1F
            self._coalesce_tx()
        elif offset == SCR:
            self.scr = value
        return None

    def write_thr(self, values: list[int]) -> None:
        """THR (offset 0) writes replayed from KVM's coalesced ring, in order: one lock
        and one output call for the batch."""
        out = bytearray()
        with self._lock:
            for v in values:
                b = self._write(RBR_THR_DLL, v & 0xFF)
                if b is not None:
                    out.append(b)
            self._publish_lsr()
            if self.ier or self._irq_level:
                self._update_irq()
        if out:
            if TP_TX.enabled:
                for b in out:
                    TP_TX.emit(byte=b)
            self._out(bytes(out))

    def _publish_lsr(self) -> None:
        """The LSR a read would give now, for reads answered in C; none while an overrun
        is flagged (reading clears it).  Call with the lock held, after every change of
        the receiver or LSR and *before* the line may rise: a vCPU the interrupt wakes
        reads LSR in C at once, without waiting for this lock."""
        if self._lsr_read is not None:
            self._lsr_read.set(None if self.lsr & LSR_OE else self.lsr | (LSR_DR if self.rx else 0))

    def _coalesce_tx(self) -> None:
        """THR writes may skip their exit while their timing can't be seen: no THRE
        interrupt to raise (IER), no loopback to receive them (MCR).  (This write's exit
        replayed the ring first, so nothing queued is handled under the new rule.)"""
        if self._tx_zone is not None:
            self._tx_zone.want(not self.ier & IER_THRI and not self.mcr & MCR_LOOP)

    def _fcr(self, value: int) -> None:
        if (value ^ self.fcr) & FCR_FIFO_ENABLE:
            self.rx.clear()                  # FCR0 changing clears both FIFOs
        if not value & FCR_FIFO_ENABLE:
            self.fcr = 0                     # the other bits need FCR0 set
        else:
            self.fcr = value & FCR_KEPT
            if value & FCR_CLEAR_RX:
                self.rx.clear()
            # FCR_CLEAR_TX: the TX FIFO is always empty already
        self._receive()                      # the wire goes on delivering

    def _push(self, byte: int) -> None:
        if len(self.backlog) >= RX_QUEUE_MAX:
            self.lsr |= LSR_OE
        else:
            self.backlog.append(byte)

    # ---------------------------------------------------------- snapshot (ARCHITECTURE.md "Snapshots")
    _SAVED = ("ier", "lcr", "mcr", "lsr", "msr", "scr", "dll", "dlm", "fcr", "thr_ipending")

    def save(self) -> dict:
        """Primary state: the registers, the receiver (RBR/RX FIFO) and the wire's backlog."""
        with self._lock:
            s = {k: getattr(self, k) for k in self._SAVED}
            s["rx"] = bytes(self.rx)
            s["backlog"] = bytes(self.backlog)
            return s

    def restore(self, state: dict) -> None:
        with self._lock:
            for k in self._SAVED:
                setattr(self, k, state[k])
            self.rx = deque(state["rx"])
            self.backlog = deque(state["backlog"])
            self._rx_activity = self._clock()       # the character timeout restarts
            self._irq_level = False

    def rebuilt(self) -> None:
        """Derived: the IRQ line's level (and the character-timeout timer) from the registers,
        and whether THR writes are coalesced."""
        with self._lock:
            self._publish_lsr()
            self._update_irq()
            self._coalesce_tx()

    # ---------------------------------------------------------- console input
    def feed(self, data: bytes) -> None:
        with self._lock:
            for b in data:
                self._push(b)
            self._receive()
            if TP_RX.enabled:
                TP_RX.emit(n=len(data), queued=len(self.rx) + len(self.backlog))
            self._publish_lsr()                 # first: the vCPU the line wakes reads LSR in C at once
            self._update_irq()
