"""devices/serial.py's 16550A FIFO on a fake clock, without KVM.

What a guest sees on /dev/kvm is guest-images/tests/serial_fifo.c (tests/test_guests.py).
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from devices.serial import (FIFO_SIZE, IER_DLM, IER_RDI, IER_RLSI, IER_THRI, IIR_CTI, IIR_FCR, IIR_NO_INT,
                            IIR_RDI, IIR_RLSI, IIR_THRI, LCR, LSR, LSR_DR, LSR_OE, LSR_TEMT, LSR_THRE, MCR,
                            RBR_THR_DLL, RX_QUEUE_MAX, SCR, Serial)


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


class Uart:
    def __init__(self):
        self.clock = Clock()
        self.out = bytearray()
        self.levels = []
        self.s = Serial(self.out.extend, self.levels.append, clock=self.clock)
        # 115200 8N1, as the kit and Linux's console set it
        self.s.write(LCR, 1, 0x83)
        self.s.write(RBR_THR_DLL, 1, 1)
        self.s.write(IER_DLM, 1, 0)
        self.s.write(LCR, 1, 0x03)

    @property
    def irq(self):
        return self.levels[-1] if self.levels else False

    def iir(self):
        return self.s.read(IIR_FCR, 1)

    def drain(self):
        got = bytearray()
        while self.s.read(LSR, 1) & LSR_DR:
            got.append(self.s.read(RBR_THR_DLL, 1))
        return bytes(got)


@pytest.fixture
def u():
    u = Uart()
    yield u
    u.s.stop()


def test_fifo_enable_shows_16550a_in_iir(u):
    assert u.iir() & 0xC0 == 0
    u.s.write(IIR_FCR, 1, 0x07)
    assert u.iir() & 0xC0 == 0xC0                 # Linux's autoconfig: 16550A
    u.s.write(IIR_FCR, 1, 0xC6)                   # FCR0 clear: other bits ignored, FIFO off
    assert u.iir() & 0xC0 == 0
    assert u.s.fcr == 0


def test_rx_fifo_trigger_level_then_character_timeout(u):
    s = u.s
    s.write(IIR_FCR, 1, 0x81)                     # FIFO on, trigger 8
    s.write(IER_DLM, 1, IER_RDI)
    s.feed(b"abc")
    assert u.iir() == 0xC1 and not u.irq          # 3 < 8: nothing yet
    s.feed(b"defgh")
    assert u.iir() == 0xC0 | IIR_RDI and u.irq    # 8 at the trigger
    assert u.drain() == b"abcdefgh"
    assert not u.irq
    s.feed(b"xy")
    assert u.iir() & 0x0F == IIR_NO_INT
    u.clock.t += s.char_timeout() * 1.01          # 4 character times of silence
    assert u.iir() == 0xC0 | IIR_CTI
    assert s.read(RBR_THR_DLL, 1) == ord("x")     # a read restarts the timeout
    assert u.iir() & 0x0F == IIR_NO_INT
    u.clock.t += s.char_timeout() * 1.01
    assert u.iir() & 0x0F == IIR_CTI
    assert s.read(RBR_THR_DLL, 1) == ord("y")
    assert u.iir() & 0x0F == IIR_NO_INT


def test_char_timeout_follows_the_divisor_and_lcr(u):
    s = u.s
    assert s.char_timeout() == pytest.approx(4 * 10 / 115200)
    s.write(LCR, 1, 0x80 | 0x0F)                  # DLAB, 8 bits, 2 stop, parity
    s.write(RBR_THR_DLL, 1, 12)                   # 9600
    s.write(LCR, 1, 0x0F)
    assert s.char_timeout() == pytest.approx(4 * 12 / 9600)


def test_fifo_holds_16_the_wire_keeps_the_rest(u):
    s = u.s
    s.write(IIR_FCR, 1, 0x01)
    data = bytes(range(40))
    s.feed(data)
    assert len(s.rx) == FIFO_SIZE and len(s.backlog) == 40 - FIFO_SIZE
    assert u.drain() == data                      # refilled from the wire as it is read


def test_fifo_off_is_a_one_byte_rbr(u):
    s = u.s
    s.write(IER_DLM, 1, IER_RDI)
    s.feed(b"hi")
    assert len(s.rx) == 1
    assert u.iir() == IIR_RDI and u.irq
    assert u.drain() == b"hi"
    assert u.iir() == IIR_NO_INT and not u.irq


def test_clearing_and_toggling_the_fifo(u):
    s = u.s
    s.write(IIR_FCR, 1, 0x01)
    s.feed(b"0123456789")
    s.write(IIR_FCR, 1, 0x03)                     # clear RX: the FIFO's bytes are gone
    assert u.drain() == b""
    s.feed(b"ab")
    s.write(IIR_FCR, 1, 0x00)                     # FCR0 change clears too
    assert u.drain() == b""


def test_tx_line_with_one_thre_check_per_16_bytes(u):
    s = u.s
    s.write(IIR_FCR, 1, 0x07)
    line = b"a line of text longer than sixteen bytes\r\n"
    lsr_reads = 0
    for i in range(0, len(line), 16):
        lsr_reads += 1
        assert s.read(LSR, 1) & LSR_THRE
        for b in line[i:i + 16]:
            s.write(RBR_THR_DLL, 1, b)
    assert s.read(LSR, 1) & (LSR_THRE | LSR_TEMT) == LSR_THRE | LSR_TEMT
    assert bytes(u.out) == line and lsr_reads == 3


def test_thre_interrupt_cleared_by_iir_read_and_raised_by_write(u):
    s = u.s
    s.write(IIR_FCR, 1, 0x01)
    s.write(IER_DLM, 1, IER_THRI)
    assert u.irq and u.iir() == 0xC0 | IIR_THRI   # enabling THRI with THR empty
    assert not u.irq and u.iir() & 0x0F == IIR_NO_INT
    s.write(RBR_THR_DLL, 1, ord("x"))
    assert u.irq


def test_overrun_on_a_full_wire_and_line_status_priority(u):
    s = u.s
    s.write(IER_DLM, 1, IER_RDI | IER_RLSI)
    s.feed(bytes(RX_QUEUE_MAX + 2))
    assert u.iir() == IIR_RLSI
    assert s.read(LSR, 1) & LSR_OE
    assert not s.read(LSR, 1) & LSR_OE
    assert u.iir() == IIR_RDI


def test_loopback_goes_through_the_fifo(u):
    s = u.s
    s.write(IIR_FCR, 1, 0x01)
    s.write(MCR, 1, 0x10)
    for b in b"loop":
        s.write(RBR_THR_DLL, 1, b)
    assert u.drain() == b"loop" and u.out == b""


def test_the_timer_raises_the_character_timeout():
    levels = []
    raised = threading.Event()

    def set_irq(level):
        levels.append(level)
        if level:
            raised.set()
    s = Serial(lambda b: None, set_irq)
    try:
        s.write(IIR_FCR, 1, 0xC1)                 # trigger 14
        s.write(IER_DLM, 1, IER_RDI)
        s.feed(b"ab")
        assert not raised.is_set()
        assert raised.wait(2.0)                   # 4 character times at 9600 baud: ~4 ms
        assert s.read(IIR_FCR, 1) & 0x0F == IIR_CTI
        assert s.read(RBR_THR_DLL, 1) == ord("a")
        assert s.read(RBR_THR_DLL, 1) == ord("b")
        assert levels[-1] is False
    finally:
        s.stop()
    assert s._timer is None


def test_hostile_register_traffic_never_raises(u):
    s = u.s
    rng = random.Random(7)
    for _ in range(20_000):
        off = rng.randrange(8)
        if rng.random() < 0.5:
            s.write(off, 1, rng.randrange(1 << 32))
        else:
            s.read(off, 1)
        if rng.random() < 0.05:
            s.feed(bytes(rng.randrange(256) for _ in range(rng.randrange(40))))
        u.clock.t += rng.random() * 0.001
    s.read(SCR, 1)
