"""Port-I/O and MMIO buses: address ranges -> devices.

A device is any object with ``read(offset, size) -> int`` and
``write(offset, size, value)`` where ``offset`` is relative to the start of
the range it was registered at.  Devices do their own locking (a vCPU thread,
the serial input thread and later event-channel code may all call them); a
device handler must never call back into a bus.

Ranges may not overlap: registering an overlapping range raises BusError.
The PIO bus keeps a dict from every claimed port to its device, so a PIO exit
costs one dict lookup; the MMIO bus bisects a sorted list of ranges.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass
from typing import Protocol


class Device(Protocol):
    def read(self, offset: int, size: int) -> int: ...
    def write(self, offset: int, size: int, value: int) -> None: ...


class BusError(ValueError):
    pass


@dataclass(frozen=True)
class Mapping:
    """A device at [base, base + length) of a bus."""
    base: int
    length: int
    device: Device
    name: str

    @property
    def end(self) -> int:
        return self.base + self.length


class _Bus:
    """Ranges kept as one immutable (starts, maps) pair: writers (under ``_lock``)
    build a new pair and swap it in with one assignment, so a vCPU looking an
    address up concurrently (no lock) sees either the old table or the new one,
    never a half-updated mix."""
    kind = "bus"
    limit = 1 << 64

    def __init__(self) -> None:
        self._table: tuple[tuple[int, ...], tuple[Mapping, ...]] = ((), ())
        self._lock = threading.Lock()

    def register(self, base: int, length: int, device: Device, name: str) -> Mapping:
        if length <= 0 or base < 0 or base + length > self.limit:
            raise BusError(f"{self.kind}: bad range {base:#x}+{length:#x} for {name}")
        with self._lock:
            starts, maps = self._table
            i = bisect.bisect_right(starts, base)
            for other in (maps[i - 1] if i > 0 else None, maps[i] if i < len(maps) else None):
                if other is not None and other.base < base + length and base < other.end:
                    raise BusError(f"{self.kind}: {name} at {base:#x}+{length:#x} overlaps "
                                   f"{other.name} at {other.base:#x}+{other.length:#x}")
            m = Mapping(base, length, device, name)
            self._table = (starts[:i] + (base,) + starts[i:], maps[:i] + (m,) + maps[i:])
            return m

    def unregister(self, base: int) -> None:
        with self._lock:
            starts, maps = self._table
            i = bisect.bisect_left(starts, base)
            if i == len(starts) or starts[i] != base:
                raise BusError(f"{self.kind}: nothing registered at {base:#x}")
            self._table = (starts[:i] + starts[i + 1:], maps[:i] + maps[i + 1:])

    def find(self, addr: int) -> Mapping | None:
        starts, maps = self._table
        i = bisect.bisect_right(starts, addr) - 1
        if i >= 0:
            m = maps[i]
            if addr < m.end:
                return m
        return None

    def mappings(self) -> list[Mapping]:
        return list(self._table[1])


class PioBus(_Bus):
    kind = "pio"
    limit = 1 << 16

    def __init__(self) -> None:
        super().__init__()
        self.by_port: dict[int, Mapping] = {}
        # The vCPU loop's view: port -> (read, write, offset within the range, name),
        # bound methods resolved once at registration instead of on every exit.
        self.handlers: dict[int, tuple] = {}

    def register(self, base: int, length: int, device: Device, name: str) -> Mapping:
        m = super().register(base, length, device, name)
        for p in range(base, base + length):
            self.by_port[p] = m
            self.handlers[p] = (device.read, device.write, p - base, name)
        return m

    def unregister(self, base: int) -> None:
        m = self.find(base)
        super().unregister(base)
        if m:
            for p in range(m.base, m.end):
                self.by_port.pop(p, None)
                self.handlers.pop(p, None)


class MmioBus(_Bus):
    kind = "mmio"
