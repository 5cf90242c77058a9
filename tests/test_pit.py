"""devices/pit.py's state machine on a fake clock, and its timer thread on the real one.

No KVM: the Pit is driven through its port handlers as the vCPU loop would, with a
recording line in place of the irqchip's.  What a guest sees on real /dev/kvm is
guest-images/tests/pit.c (tests/test_guests.py).
"""

from __future__ import annotations

import threading
import time

import pytest

from devices.pit import MIN_EDGE_GAP_NS, NS, PIT_FREQ_HZ, Pit, PortB


class Clock:
    def __init__(self):
        self.ns = 1_000_000_000

    def __call__(self):
        return self.ns

    def ticks(self, n):
        """Advance by exactly n PIT clocks (rounded up to the ns)."""
        self.ns += -(-n * NS // PIT_FREQ_HZ)


class Line:
    def __init__(self):
        self.pulses = 0
        self.times = []

    def pulse(self):
        self.pulses += 1
        self.times.append(time.monotonic())


@pytest.fixture
def pit():
    clock = Clock()
    p = Pit(Line(), clock=clock)
    yield p, clock
    p.stop()


def count16(p, ch):
    lo = p.read(ch, 1)
    return lo | p.read(ch, 1) << 8


def load(p, ch, control, count):
    p.write(3, 1, control)
    p.write(ch, 1, count & 0xFF)
    p.write(ch, 1, count >> 8)


def test_mode0_counts_down_from_ffff_as_quick_pit_calibrate_reads_it(pit):
    p, clock = pit
    port61 = PortB(p)
    port61.write(0, 1, 0x01)                      # gate 2 high, speaker off
    load(p, 2, 0xB0, 0xFFFF)                      # ch2, lohi, mode 0, binary
    assert count16(p, 2) == 0xFFFF
    assert not port61.read(0, 1) & 0x20           # OUT2 low while counting
    clock.ticks(256)
    assert count16(p, 2) == 0xFEFF                # the MSB Linux's pit_expect_msb waits for
    clock.ticks(0xFFFF - 256)
    assert count16(p, 2) == 0
    assert port61.read(0, 1) & 0x20               # terminal count: OUT2 high
    clock.ticks(1)
    assert count16(p, 2) == 0xFFFF                # keeps counting (wraps), OUT stays high
    assert port61.read(0, 1) & 0x20


def test_gate2_low_stops_channel2_and_port61_reads_back(pit):
    p, clock = pit
    port61 = PortB(p)
    load(p, 2, 0xB0, 1000)                        # gate low at reset: holds
    clock.ticks(500)
    assert count16(p, 2) == 1000
    port61.write(0, 1, 0x03)
    clock.ticks(400)
    assert count16(p, 2) == 600
    port61.write(0, 1, 0x02)                      # gate low: paused
    clock.ticks(10_000)
    assert count16(p, 2) == 600
    v = port61.read(0, 1)
    assert v & 0x0F == 0x02 and not v & 0x20
    port61.write(0, 1, 0x01)
    clock.ticks(600)
    assert port61.read(0, 1) & 0x20


def test_refresh_bit_toggles_on_every_read(pit):
    p, _ = pit
    port61 = PortB(p)
    a, b, c = (port61.read(0, 1) & 0x10 for _ in range(3))
    assert a != b and b != c


def test_pit_calibrate_tsc_mode0_latch_polls_out2(pit):
    """arch/x86/kernel/tsc.c pit_calibrate_tsc: 0x61 = (x & ~2) | 1, 0xb0, latch LSB, MSB,
    then poll 0x61 bit 5."""
    p, clock = pit
    port61 = PortB(p)
    port61.write(0, 1, (port61.read(0, 1) & ~0x02) | 0x01)
    latch = PIT_FREQ_HZ // (1000 // 10)
    load(p, 2, 0xB0, latch)
    polls = 0
    while not port61.read(0, 1) & 0x20:
        clock.ticks(50)
        polls += 1
    assert polls == -(-latch // 50)


def test_counter_latch_freezes_the_read_value(pit):
    p, clock = pit
    load(p, 0, 0x34, 1000)                         # ch0 mode 2
    clock.ticks(100)
    p.write(3, 1, 0x00)                            # latch ch0
    clock.ticks(300)
    p.write(3, 1, 0x00)                            # a second latch before reading: ignored
    assert count16(p, 0) == 900
    assert count16(p, 0) == 600                    # live again


def test_read_back_status_then_count_of_every_channel(pit):
    p, clock = pit
    load(p, 0, 0x34, 1000)                         # mode 2, lohi
    p.write(3, 1, 0x76)                            # ch1 mode 3 lohi, no count: null count
    load(p, 2, 0xB0, 50)
    p.write(0x61 - 0x61, 1, p.read(0, 1))          # a stray read/write pair (flip-flops stay sane)
    p.read(0, 1)
    clock.ticks(60)
    p.write(3, 1, 0b11000000 | 0b1110)             # read-back: count and status of 0, 1, 2
    s0 = p.read(0, 1)
    assert s0 & 0x3F == 0x34 and s0 & 0x80 and not s0 & 0x40
    s1 = p.read(1, 1)
    assert s1 & 0x40 and s1 & 0x3F == 0x36
    s2 = p.read(2, 1)                              # gate 2 low: never counted
    assert s2 & 0x3F == 0x30 and not s2 & 0x80
    assert count16(p, 2) == 50
    # status only, then count only: status comes first when both are latched
    p.write(3, 1, 0b11100000 | 0b0010)             # status of ch0
    p.write(3, 1, 0b11010000 | 0b0010)             # count of ch0
    assert p.read(0, 1) & 0x3F == 0x34
    count16(p, 0)


def test_lsb_only_and_msb_only_access(pit):
    p, clock = pit
    p.write(3, 1, 0x10)                            # ch0 LSB only, mode 0
    p.write(0, 1, 200)
    clock.ticks(50)
    assert p.read(0, 1) == 150
    p.write(3, 1, 0x20)                            # MSB only
    p.write(0, 1, 0x10)                            # 0x1000
    clock.ticks(0x100)
    assert p.read(0, 1) == 0x0F


def test_mode0_first_byte_stops_counting(pit):
    p, clock = pit
    load(p, 0, 0x30, 100)
    clock.ticks(200)
    p.write(3, 1, 0xE2)                            # read-back status of ch0: OUT high
    assert p.read(0, 1) & 0x80
    p.write(0, 1, 0x10)                            # first byte: OUT low, counting stops
    p.write(3, 1, 0xE2)
    assert not p.read(0, 1) & 0x80


def test_mode2_periodic_reload_and_count_change_at_period_end(pit):
    p, clock = pit
    load(p, 0, 0x34, 100)
    clock.ticks(30)
    assert count16(p, 0) == 70
    load_only = [p.write(0, 1, 50), p.write(0, 1, 0)]  # new count: not before this period ends
    del load_only
    clock.ticks(20)
    assert count16(p, 0) == 50
    clock.ticks(50)                                # period over: 50 from now on
    assert count16(p, 0) == 50
    clock.ticks(25)
    assert count16(p, 0) == 25


def test_mode3_square_wave_out(pit):
    p, clock = pit
    load(p, 0, 0x36, 100)
    outs = []
    for _ in range(4):
        p.write(3, 1, 0xE2)
        outs.append(bool(p.read(0, 1) & 0x80))
        clock.ticks(50)
    assert outs == [True, False, True, False]


def test_mode1_and_mode5_start_on_gate2_rising_edge(pit):
    p, clock = pit
    port61 = PortB(p)
    load(p, 2, 0xB2, 100)                          # ch2 mode 1
    clock.ticks(500)
    assert port61.read(0, 1) & 0x20                # waiting for a trigger: OUT high
    port61.write(0, 1, 1)
    assert not port61.read(0, 1) & 0x20            # triggered: OUT low for N clocks
    clock.ticks(100)
    assert port61.read(0, 1) & 0x20
    load(p, 2, 0xBA, 100)                          # mode 5
    port61.write(0, 1, 0)
    port61.write(0, 1, 1)
    clock.ticks(100)
    assert not port61.read(0, 1) & 0x20            # the strobe at terminal count
    clock.ticks(1)
    assert port61.read(0, 1) & 0x20


def test_hostile_writes_never_raise(pit):
    p, clock = pit
    port61 = PortB(p)
    import random
    rng = random.Random(12)
    for _ in range(20_000):
        port = rng.randrange(4)
        if rng.random() < 0.5:
            p.write(port, rng.choice((1, 2, 4)), rng.randrange(1 << 32))
        else:
            p.read(port, 1)
        if rng.random() < 0.05:
            port61.write(0, 1, rng.randrange(256))
            port61.read(0, 1)
        clock.ticks(rng.randrange(3000))
        p.channels[0].next_edge(clock())


def test_channel0_periodic_edges_then_stop_on_reprogram():
    """The real timer thread: mode 2 at 1 kHz pulses the line; a mode-0 count in the
    past ends it; the thread exists only while edges are to come."""
    line = Line()
    p = Pit(line)
    try:
        assert not p.timer_running
        load(p, 0, 0x34, PIT_FREQ_HZ // 1000)
        assert p.timer_running
        deadline = time.monotonic() + 5
        while line.pulses < 20 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert line.pulses >= 20
        gaps = [b - a for a, b in zip(line.times, line.times[1:])]
        assert min(gaps) >= MIN_EDGE_GAP_NS / NS * 0.9
        p.write(3, 1, 0x30)                        # mode 0, no count: nothing to come
        deadline = time.monotonic() + 2
        while p.timer_running and time.monotonic() < deadline:
            time.sleep(0.005)
        assert not p.timer_running
        n = line.pulses
        time.sleep(0.05)
        assert line.pulses == n
        load(p, 0, 0x30, 1193)                     # one-shot mode 0: one edge after ~1 ms
        time.sleep(0.1)
        assert line.pulses == n + 1
        assert not p.timer_running
    finally:
        p.stop()


def test_stop_ends_the_timer_thread():
    line = Line()
    p = Pit(line)
    load(p, 0, 0x34, 0)                            # 65536: ~18.2 Hz
    assert p.timer_running
    t = p._thread
    p.stop()
    assert not t.is_alive()
    load(p, 0, 0x34, 100)                          # after stop: no thread again
    assert not p.timer_running


def test_a_hostile_rate_is_capped():
    line = Line()
    p = Pit(line)
    try:
        load(p, 0, 0x34, 2)                        # 596 kHz asked
        time.sleep(0.2)
    finally:
        p.stop()
    assert line.pulses <= 0.2 * NS / MIN_EDGE_GAP_NS * 1.5


def test_threads_hammering_ports_and_timer():
    line = Line()
    p = Pit(line)
    port61 = PortB(p)
    stop = threading.Event()

    def hammer(seed):
        import random
        rng = random.Random(seed)
        while not stop.is_set():
            p.write(rng.randrange(4), 1, rng.randrange(256))
            p.read(rng.randrange(4), 1)
            port61.write(0, 1, rng.randrange(4))
    ts = [threading.Thread(target=hammer, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    time.sleep(0.3)
    stop.set()
    for t in ts:
        t.join()
    p.stop()
    assert not p.timer_running
