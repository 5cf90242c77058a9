"""Fixed little-endian C structs for the boot path (ACPI tables, PVH start info, the bzImage
setup header), declared as with ``construct`` and used the same way, on ``struct``.

    Gas = Struct("space_id" / Int8ul, "bit_width" / Int8ul, ..., "address" / Int64ul)
    Gas.build(dict(space_id=1, ...)) -> bytes;  Gas.parse(raw).address;  Gas.sizeof()

Why not construct itself: every `vmm run` builds these tables, and importing construct
(which imports pdb, hashlib, platform, pickle, ...) was ~14 ms of a ~100 ms start to the
first KVM_RUN on the host, ~25x that in the nested test host; a machine without Xen needs
nothing else of it (the Xen ABI and snapshots still use construct).  The subset is what
these layouts use: unsigned integers, fixed-size bytes, ``Const``, ``Default``, nested
structs, no padding.  Like construct, ``build`` refuses a value that doesn't fit and
``parse`` a ``Const`` that doesn't match (ValueError); ``parse`` ignores bytes past the end.
"""

from __future__ import annotations

import struct


class Container(dict):
    """A parsed struct: a dict whose fields are also attributes (construct's Container)."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value) -> None:
        self[name] = value


class _Field:
    """A field's layout: its ``struct`` format, the number of values it packs into, and how
    a value goes to and comes back from those."""
    fmt = ""
    count = 1

    def __rtruediv__(self, name: str) -> tuple[str, "_Field"]:
        return (name, self)

    def flat(self, value) -> list:
        return [value]

    def unflat(self, values: list, i: int):
        return values[i]

    def default(self):
        raise KeyError("no value given")

    def sizeof(self) -> int:
        return struct.calcsize("<" + self.fmt)

    def build(self, value=None) -> bytes:
        if value is None:
            value = self.default()
        return struct.pack("<" + self.fmt, *self.flat(value))

    def parse(self, data: bytes):
        return self.unflat(list(struct.unpack_from("<" + self.fmt, data)), 0)


class _Int(_Field):
    def __init__(self, fmt: str, bits: int):
        self.fmt, self._max = fmt, (1 << bits) - 1

    def flat(self, value) -> list:
        if not 0 <= value <= self._max:      # struct's own message names no field
            raise ValueError(f"{value} does not fit in {self._max.bit_length()} bits")
        return [value]


Int8ul, Int16ul, Int32ul, Int64ul = _Int("B", 8), _Int("H", 16), _Int("I", 32), _Int("Q", 64)


class Bytes(_Field):
    def __init__(self, n: int):
        self.fmt, self._n = f"{n}s", n

    def flat(self, value) -> list:
        if len(value) != self._n:           # struct would pad or cut it silently
            raise ValueError(f"{len(value)} bytes given for a {self._n}-byte field")
        return [bytes(value)]


class Default(_Field):
    """``sub`` with ``value`` when the field is not given (or None)."""

    def __init__(self, sub: _Field, value):
        self.sub, self.value = sub, value
        self.fmt, self.count = sub.fmt, sub.count

    def flat(self, value) -> list:
        return self.sub.flat(self.value if value is None else value)

    def unflat(self, values: list, i: int):
        return self.sub.unflat(values, i)

    def default(self):
        return self.value


class Const(Default):
    """Always ``value``: building another value or parsing another one is an error."""

    def __init__(self, value, sub: _Field | None = None):
        super().__init__(Bytes(len(value)) if sub is None else sub, value)

    def flat(self, value) -> list:
        if value is not None and value != self.value:
            raise ValueError(f"expected the constant {self.value!r}, not {value!r}")
        return self.sub.flat(self.value)

    def unflat(self, values: list, i: int):
        value = self.sub.unflat(values, i)
        if value != self.value:
            raise ValueError(f"expected the constant {self.value!r}, parsed {value!r}")
        return value


class Struct(_Field):
    """Fields in order, packed with no padding; ``subcons`` are its ``(name, field)`` pairs."""

    def __init__(self, *subcons: tuple[str, _Field]):
        self.subcons = list(subcons)
        self.fmt = "".join(f.fmt for _, f in subcons)
        self.count = sum(f.count for _, f in subcons)
        self._struct = struct.Struct("<" + self.fmt)

    def flat(self, value) -> list:
        out: list = []
        for name, f in self.subcons:
            v = value.get(name)
            if v is None:
                try:
                    v = f.default()
                except KeyError:
                    raise KeyError(f"no value for the field {name!r}") from None
            out += f.flat(v)
        return out

    def unflat(self, values: list, i: int) -> Container:
        c = Container()
        for name, f in self.subcons:
            c[name] = f.unflat(values, i)
            i += f.count
        return c

    def sizeof(self) -> int:
        return self._struct.size

    def build(self, value) -> bytes:
        return self._struct.pack(*self.flat(value))

    def parse(self, data: bytes) -> Container:
        return self.unflat(list(self._struct.unpack_from(data)), 0)


__all__ = ["Bytes", "Const", "Container", "Default", "Int8ul", "Int16ul", "Int32ul", "Int64ul", "Struct"]
