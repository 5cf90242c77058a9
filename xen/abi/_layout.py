"""C layout machinery: one declaration per struct, laid out for both x86 ABIs.

* ``"64"``: x86_64.  ``unsigned long``, ``xen_ulong_t``, ``xen_pfn_t``, pointers
  and guest handles are 8 bytes; ``uint64_t`` is 8-byte aligned.
* ``"32"``: x86_32, i.e. the compat ABI of a 32-bit HVM guest.  Those types are
  4 bytes and ``uint64_t`` is only 4-byte aligned (i386 psABI; Xen generates its
  compat headers with ``-m32`` and ``#pragma pack(4)``: xen/include/Makefile,
  "8-byte types are 4-byte aligned on x86_32").

construct adds no implicit padding, so :class:`XenStruct` applies the C rules
(natural alignment, trailing padding to the struct's alignment) and inserts
explicit ``Padding`` where the compiler would.
"""

from __future__ import annotations

import functools
import types
from enum import Enum
from typing import Callable, NamedTuple

import construct as c

ABIS = ("64", "32")


def _abi(abi) -> str:
    a = str(abi)
    if a not in ABIS:
        raise ValueError(f"abi must be one of {ABIS}, not {abi!r}")
    return a


class CType:
    """A C type whose layout may depend on the ABI.

    ``layout(abi)`` returns ``(subcon, size, align, signature)`` (or None for a
    field absent on that ABI); the signature is a hashable description used to
    tell whether both ABIs lay a type out alike.  ``"name" / ctype`` makes a
    struct field.
    """

    def __init__(self, cname: str, layout: Callable[[str], tuple | None]):
        self.cname = cname
        self._layout = layout

    def layout(self, abi: str):
        return self._layout(abi)

    def __rtruediv__(self, name: str):
        return (name, self)

    def __repr__(self):
        return f"<CType {self.cname}>"


def _fixed(cname: str, subcon, size: int) -> CType:
    return CType(cname, lambda abi: (subcon, size, size, (cname, size)))


def _long(cname: str) -> CType:
    """``unsigned long`` and the x86 typedefs of it: the register width."""
    def lay(abi):
        if abi == "64":
            return c.Int64ul, 8, 8, (cname, 8)
        return c.Int32ul, 4, 4, (cname, 4)
    return CType(cname, lay)


u8 = _fixed("uint8_t", c.Int8ul, 1)
s8 = _fixed("int8_t", c.Int8sl, 1)
u16 = _fixed("uint16_t", c.Int16ul, 2)
s16 = _fixed("int16_t", c.Int16sl, 2)
u32 = _fixed("uint32_t", c.Int32ul, 4)       # also "unsigned int" on x86
s32 = _fixed("int32_t", c.Int32sl, 4)        # also "int" on x86
# uint64_t: 8 bytes on both ABIs, but only 4-byte aligned inside i386 structs.
u64 = CType("uint64_t", lambda abi: (c.Int64ul, 8, 8 if abi == "64" else 4, ("uint64_t", 8)))
ulong = _long("unsigned long")
xen_ulong_t = _long("xen_ulong_t")   # arch-x86/xen.h: typedef unsigned long xen_ulong_t;
xen_pfn_t = _long("xen_pfn_t")       # arch-x86/xen.h: typedef unsigned long xen_pfn_t;
# arch-x86/xen.h: XEN_GUEST_HANDLE(t) is "typedef struct { t *p; }": a guest
# virtual address of pointer width (linear address, as the guest sees it).
handle = _long("XEN_GUEST_HANDLE")
domid_t = _fixed("domid_t", c.Int16ul, 2)              # xen.h: typedef uint16_t domid_t;
evtchn_port_t = _fixed("evtchn_port_t", c.Int32ul, 4)  # event_channel.h: typedef uint32_t
grant_ref_t = _fixed("grant_ref_t", c.Int32ul, 4)      # grant_table.h: typedef uint32_t


def sizeof_ulong(abi) -> int:
    """sizeof(xen_ulong_t) (= sizeof(unsigned long) on x86)."""
    return xen_ulong_t.layout(_abi(abi))[1]


def array(ct: CType, n: int) -> CType:
    def lay(abi):
        sub, size, align, sig = ct.layout(abi)
        return c.Array(n, sub), size * n, align, ("array", n, sig)
    return CType(f"{ct.cname}[{n}]", lay)


def chars(n: int) -> CType:
    """``char x[n]``: a NUL-padded string.  Latin-1, so any byte a guest puts there
    decodes (UTF-8 would raise on a stray 0x80: a VMM error, not an -EFAULT)."""
    return CType(f"char[{n}]", lambda abi: (
        c.StringEncoded(c.FixedSized(n, c.NullStripped(c.GreedyBytes)), "latin1"), n, 1, ("char", n)))


def raw(n: int) -> CType:
    """``uint8_t x[n]`` kept as bytes."""
    return CType(f"uint8_t[{n}]", lambda abi: (c.Bytes(n), n, 1, ("bytes", n)))


def flex() -> CType:
    """A flexible array member (``unsigned char buf[]``): the rest of the data.
    Counts 0 towards the struct's C sizeof, as in C."""
    return CType("[]", lambda abi: (c.GreedyBytes, 0, 1, ("flex",)))


def reserved(ct: CType) -> CType:
    """A pad/reserved field declared by the header: parsed, defaults to 0."""
    def lay(abi):
        sub, size, align, sig = ct.layout(abi)
        if isinstance(sub, c.Bytes):
            zero = bytes(size)
        elif isinstance(sub, c.Array):
            zero = [0] * sub.count
        else:
            zero = 0
        return c.Default(sub, zero), size, align, sig
    return CType(ct.cname, lay)


def by_abi(ct64: CType | None, ct32: CType | None) -> CType:
    """A field whose type differs per ABI (None: the field is absent there)."""
    def lay(abi):
        ct = ct64 if abi == "64" else ct32
        return None if ct is None else ct.layout(abi)
    return CType("by_abi", lay)


def union(cname: str, *members) -> CType:
    """A C union: ``Padded(size, Union(None, ...))``.  List the member that
    covers the whole union first: rebuilding a parsed container builds the
    first member, so the result is then byte-identical."""
    def lay(abi):
        laid = [(name, ct.layout(abi)) for name, ct in members]
        align = max(lo[2] for _, lo in laid)
        size = max(lo[1] for _, lo in laid)
        size += -size % align
        sub = c.Padded(size, c.Union(None, *[name / lo[0] for name, lo in laid]))
        return sub, size, align, ("union", tuple((n, lo[3]) for n, lo in laid))
    return CType(cname, lay)


class _Variant(NamedTuple):
    struct: c.Struct
    size: int            # C sizeof
    align: int
    offsets: dict        # top-level field -> offset
    signature: tuple


#: C struct name -> XenStruct, for every struct declared in xen.abi.
STRUCTS: dict = {}


class XenStruct(CType):
    """A struct of a Xen public header, laid out for both ABIs.

    ``s.abi64``/``s.abi32`` (also ``s["64"]``) are the construct Structs;
    ``s.sizeof(abi)`` is C's sizeof; ``s.same_on_both_abis`` is true when the
    layouts are identical (then ``s.abi64 is s.abi32``).
    """

    def __init__(self, cname: str, header: str, *fields, packed: bool = False):
        super().__init__(cname, self._nested)
        self.header = header
        self.packed = packed
        self._fields = fields
        assert cname not in STRUCTS, cname
        STRUCTS[cname] = self

    @functools.cached_property
    def variants(self) -> dict[str, _Variant]:
        """Both ABIs' layouts, made on first use rather than at import: laying out every
        struct of xen.abi was ~3 ms of each --xen start (~25x in the nested test host), and
        a guest uses a few of them (tests/test_xen_abi.py lays out all of them)."""
        v64, v32 = self._lay("64"), self._lay("32")
        if v32.signature == v64.signature:
            v32 = v64
        return {"64": v64, "32": v32}

    @property
    def same_on_both_abis(self) -> bool:
        return self.variants["32"] is self.variants["64"]

    def _lay(self, abi: str) -> _Variant:
        subcons, offsets, sig = [], {}, []
        off, max_align, has_flex = 0, 1, False
        for name, ct in self._fields:
            lo = ct.layout(abi)
            if lo is None:
                continue
            sub, size, align, fsig = lo
            if self.packed:
                align = 1
            pad = -off % align
            if pad:
                subcons.append(c.Padding(pad))
                off += pad
            offsets[name] = off
            subcons.append(name / sub)
            sig.append((name, off, size, fsig))
            has_flex |= sub is c.GreedyBytes
            off += size
            max_align = max(max_align, align)
        tail = -off % max_align
        if tail:
            subcons.append(c.Padding(tail))
            off += tail
        st = c.Struct(*subcons)
        if not has_flex:
            assert st.sizeof() == off, (self.cname, abi, st.sizeof(), off)
        return _Variant(st, off, max_align, offsets, (self.cname, off, tuple(sig)))

    def _nested(self, abi: str):
        v = self.variants[abi]
        return v.struct, v.size, v.align, v.signature

    def __getitem__(self, abi) -> c.Struct:
        return self.variants[_abi(abi)].struct

    @property
    def abi64(self) -> c.Struct:
        return self.variants["64"].struct

    @property
    def abi32(self) -> c.Struct:
        return self.variants["32"].struct

    def sizeof(self, abi) -> int:
        return self.variants[_abi(abi)].size

    def __repr__(self):
        return (f"<XenStruct {self.cname} ({self.header}): "
                f"{self.sizeof('64')} bytes on 64, {self.sizeof('32')} on 32>")


def _struct(struct) -> XenStruct:
    return STRUCTS[struct] if isinstance(struct, str) else struct


def layout(struct, abi) -> c.Struct:
    """The construct Struct of ``struct`` (a XenStruct or its C name) for
    ``abi`` in ("64", "32")."""
    return _struct(struct)[abi]


def sizeof(struct, abi) -> int:
    """C ``sizeof`` of ``struct`` (a XenStruct or its C name) on ``abi``."""
    return _struct(struct).sizeof(abi)


def _unwrap(sc):
    while isinstance(sc, (c.Renamed, c.Default, c.Padded)) and sc.subcon is not c.Pass:
        sc = sc.subcon
    return sc


def offset_of(struct, field: str, abi=None) -> int:
    """Offset of ``field``, computed from the construct Struct as the sum of the
    sizes of the subcons before it (padding included).

    ``field`` may be a path: ``"vcpu_info[3].time"``, ``"u.interdomain.port"``.
    ``struct`` is a construct Struct, or a XenStruct / C struct name with
    ``abi`` (which may be omitted only if both ABIs agree).
    """
    if isinstance(struct, (str, XenStruct)):
        xs = _struct(struct)
        if abi is None:
            if not xs.same_on_both_abis:
                raise TypeError(f"struct {xs.cname} differs between ABIs: pass abi='64' or '32'")
            abi = "64"
        struct = xs[abi]
    off, cur = 0, struct
    for part in field.split("."):
        name, _, idx = part.partition("[")
        cur = _unwrap(cur)
        if isinstance(cur, c.Struct):
            for sc in cur.subcons:
                if sc.name == name:
                    break
                off += sc.sizeof()
            else:
                raise KeyError(f"{field!r}: no field {name!r}")
        elif isinstance(cur, c.Union):
            sc = next((s for s in cur.subcons if s.name == name), None)
            if sc is None:
                raise KeyError(f"{field!r}: no union member {name!r}")
        else:
            raise KeyError(f"{field!r}: {name!r} is not inside a struct or union")
        cur = sc
        if idx:
            arr = _unwrap(cur)
            if not isinstance(arr, c.Array):
                raise KeyError(f"{field!r}: {name!r} is not an array")
            off += int(idx.rstrip("]")) * arr.subcon.sizeof()
            cur = arr.subcon
    return off


def same_offset(struct, field: str) -> int:
    """An offset both ABIs agree on (asserted)."""
    o64, o32 = offset_of(struct, field, "64"), offset_of(struct, field, "32")
    assert o64 == o32, (field, o64, o32)
    return o64


def c_names(enum: type[Enum], prefix: str) -> dict:
    """Flat C-name aliases of an enum's members: ``EVTCHNOP.send`` ->
    ``EVTCHNOP_send`` (a leading "_" of a member name is dropped)."""
    return {prefix + m.name.lstrip("_"): m for m in enum}


def exports(ns: dict) -> list:
    """The public names a header module defines (its ``__all__``): not private,
    not imported modules/classes/functions, not the primitives of this module."""
    mod = ns["__name__"]
    mine = globals()
    out = []
    for k, v in ns.items():
        if k.startswith("_") or isinstance(v, types.ModuleType):
            continue
        if mod != __name__ and mine.get(k) is v:
            continue
        if isinstance(v, (type, types.FunctionType)) and v.__module__ != mod:
            continue
        out.append(k)
    return out


__all__ = ["ABIS", "CType", "XenStruct", "STRUCTS", "layout", "sizeof", "offset_of", "sizeof_ulong"]
