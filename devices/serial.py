"""16550A UART (COM1: ports 0x3f8-0x3ff, IRQ 4).

Register behaviour follows the National/TI PC16550D data sheet, as Linux's
8250 driver probes it (scratch register, FIFO bits in IIR = 16550A).  Output
bytes go to a ``write(bytes)`` callable; input arrives via ``feed(bytes)``
from the console thread.  The IRQ line follows "an enabled interrupt is
pending" and is driven through the IrqChip on every change.
"""

from __future__ import annotations

import threading
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

IER_RDI = 0x01     # received data available
IER_THRI = 0x02    # THR empty
IER_RLSI = 0x04    # receiver line status
IER_MSI = 0x08     # modem status

IIR_NO_INT = 0x01
IIR_MSI = 0x00
IIR_THRI = 0x02
IIR_RDI = 0x04
IIR_RLSI = 0x06
IIR_FIFO_ENABLED = 0xC0

LCR_DLAB = 0x80
MCR_LOOP = 0x10
LSR_DR = 0x01
LSR_OE = 0x02
LSR_THRE = 0x20
LSR_TEMT = 0x40
FCR_FIFO_ENABLE = 0x01
FCR_CLEAR_RX = 0x02

RX_QUEUE_MAX = 1 << 16     # bytes buffered from the console before we drop


class Serial:
    def __init__(self, output: Callable[[bytes], None], set_irq: Callable[[bool], None], name: str = "serial0"):
        self.name = name
        self._out = output
        self._set_irq = set_irq
        self._lock = ordered_lock("device")
        self.rx: deque[int] = deque()
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

    # ---------------------------------------------------------- interrupt logic
    def _iir(self) -> int:
        fifo = IIR_FIFO_ENABLED if self.fcr & FCR_FIFO_ENABLE else 0
        if self.ier & IER_RLSI and self.lsr & LSR_OE:
            return IIR_RLSI | fifo
        if self.ier & IER_RDI and self.rx:
            return IIR_RDI | fifo
        if self.ier & IER_THRI and self.thr_ipending:
            return IIR_THRI | fifo
        return IIR_NO_INT | fifo

    def _update_irq(self) -> None:
        """Call with the lock held; drives the line only on a change."""
        level = not (self._iir() & IIR_NO_INT)
        if level != self._irq_level:
            self._irq_level = level
            if TP_IRQ.enabled:
                TP_IRQ.emit(level=int(level), iir=self._iir())
            self._set_irq(level)

    # ---------------------------------------------------------- bus interface
    def read(self, offset: int, size: int) -> int:
        with self._lock:
            v = self._read(offset)
            self._update_irq()
        if TP_REG.enabled:
            TP_REG.emit(dir="read", reg=offset, value=v)
        return v

    def _read(self, offset: int) -> int:
        if offset == RBR_THR_DLL:
            if self.lcr & LCR_DLAB:
                return self.dll
            v = self.rx.popleft() if self.rx else 0
            if self.rx:
                self.lsr |= LSR_DR
            else:
                self.lsr &= ~LSR_DR
            return v
        if offset == IER_DLM:
            return self.dlm if self.lcr & LCR_DLAB else self.ier
        if offset == IIR_FCR:
            v = self._iir()
            if v & 0x0F == IIR_THRI:
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
            self.thr_ipending = True     # the byte leaves at once: THR empty again
            if self.mcr & MCR_LOOP:
                self._push(value)
                return None
            return value
        if offset == IER_DLM:
            if self.lcr & LCR_DLAB:
                self.dlm = value
            else:
                if value & IER_THRI and not self.ier & IER_THRI:
                    self.thr_ipending = True  # enabling THRI with THR empty raises it
                self.ier = value & 0x0F
        elif offset == IIR_FCR:
            self.fcr = value & 0xC9
            if value & FCR_CLEAR_RX:
                self.rx.clear()
        elif offset == LCR:
            self.lcr = value
        elif offset == MCR:
            self.mcr = value & 0x1F
        elif offset == SCR:
            self.scr = value
        return None

    def _push(self, byte: int) -> None:
        if len(self.rx) >= RX_QUEUE_MAX:
            self.lsr |= LSR_OE
        else:
            self.rx.append(byte)

    # ---------------------------------------------------------- console input
    def feed(self, data: bytes) -> None:
        with self._lock:
            for b in data:
                self._push(b)
            if TP_RX.enabled:
                TP_RX.emit(n=len(data), queued=len(self.rx))
            self._update_irq()
