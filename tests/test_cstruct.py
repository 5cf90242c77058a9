"""vmm/boot/cstruct.py: the construct subset the boot path declares its C structs with
(ACPI tables, PVH start info, the bzImage setup header), checked against construct itself."""

from __future__ import annotations

import construct as c
import pytest

from vmm.boot import cstruct as cs


def declare(m):
    """The same declaration in construct (``m = c``) or in cstruct (``m = cs``)."""
    inner = m.Struct("space" / m.Int8ul, "address" / m.Int64ul)
    return m.Struct(
        "signature" / m.Const(b"SIG!"),
        "kind" / m.Const(7, m.Int8ul),
        "a" / m.Int8ul,
        "b" / m.Int16ul,
        "c" / m.Int32ul,
        "d" / m.Int64ul,
        "name" / m.Bytes(6),
        "version" / m.Default(m.Int16ul, 2),
        "reserved" / m.Default(m.Bytes(3), bytes(3)),
        "gas" / m.Default(inner, dict(space=1, address=0x1234)),
        "nested" / inner,
    )


VALUES = dict(a=0xFF, b=0xBEEF, c=0xDEADBEEF, d=1 << 63, name=b"PYVMM ", nested=dict(space=2, address=5))


def test_builds_and_parses_as_construct_does():
    ours, theirs = declare(cs), declare(c)
    assert ours.sizeof() == theirs.sizeof() == 4 + 1 + 1 + 2 + 4 + 8 + 6 + 2 + 3 + 9 + 9
    raw = ours.build(VALUES)
    assert raw == theirs.build(VALUES)
    parsed = ours.parse(raw + b"trailing bytes are ignored")
    assert parsed.signature == b"SIG!" and parsed.kind == 7 and parsed.version == 2
    assert parsed.gas.address == 0x1234 and parsed["nested"]["space"] == 2
    assert {k: parsed[k] for k in VALUES if k != "nested"} == {k: v for k, v in VALUES.items() if k != "nested"}
    parsed.version = 3                         # a parsed struct is edited and rebuilt (the fuzz tests)
    assert ours.build(parsed) == theirs.build(theirs.parse(raw) | {"version": 3})
    assert [name for name, _ in ours.subcons][:2] == ["signature", "kind"]
    assert cs.Int64ul.build(0x0102030405060708) == c.Int64ul.build(0x0102030405060708)


@pytest.mark.parametrize("bad, what", [
    (dict(a=256), "fit"), (dict(b=-1), "fit"), (dict(name=b"short"), "bytes"),
    (dict(signature=b"NOPE"), "constant"),
])
def test_refuses_what_does_not_fit(bad, what):
    with pytest.raises(ValueError, match=what):
        declare(cs).build(VALUES | bad)


def test_a_missing_field_is_named():
    with pytest.raises(KeyError, match="'c'"):
        declare(cs).build({k: v for k, v in VALUES.items() if k != "c"})


def test_parse_checks_constants():
    raw = bytearray(declare(cs).build(VALUES))
    raw[0] = ord("X")
    with pytest.raises(ValueError, match="constant"):
        declare(cs).parse(bytes(raw))
