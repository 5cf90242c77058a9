"""A tiny AML (ACPI Machine Language) encoder: just what our DSDT needs.

Reference: ACPI 6.x specification, chapter 20 "ACPI Machine Language (AML)
Specification" (§20.2 grammar) and §6.4 "Resource Data Types for ACPI".
Every function returns the encoded bytes of one AML term, so a definition
block reads like the ASL it stands for::

    scope("\\_SB_",
          device("COM1",
                 name("_HID", eisa_id("PNP0501")),
                 name("_CRS", resource_template(io_port(0x3F8, 0x3F8, 0, 8), irq(4)))))

Packages nest: an element given as bytes is an already-encoded term, so
``package(package(0xFFFF, 0, 0, 16), ...)`` is a Package of Packages.

Integers are encoded in the smallest form (§20.2.3), strings as StringPrefix
... NUL.  Nothing here evaluates AML: it is write-only.

Control methods (§20.2.5.2 ``method``, §20.2.5.3 statements, §20.2.5.4
expressions) cover what the PC's interrupt model needs (vmm/boot/acpi.py: \\_PIC,
the PCI interrupt link devices): ``method``, ``if_``/``else_``, ``return_``,
``store``, ``and_``/``or_``, ``lless``, ``create_dword_field``, ``arg(n)``,
``local(n)``, and ``operation_region``/``field`` to reach a port.  Where an
operand is a name, pass ``ref("NAME")`` (an encoded NameString); ints are
integers, as elsewhere.
"""

from __future__ import annotations

# §20.2.2 Name Objects Encoding
ROOT_CHAR = 0x5C            # '\'
PARENT_PREFIX = 0x5E        # '^'
DUAL_NAME_PREFIX = 0x2E
MULTI_NAME_PREFIX = 0x2F
# §20.2.3 Data Objects Encoding
ZERO_OP = 0x00
ONE_OP = 0x01
BYTE_PREFIX = 0x0A
WORD_PREFIX = 0x0B
DWORD_PREFIX = 0x0C
STRING_PREFIX = 0x0D
QWORD_PREFIX = 0x0E
# §20.2.5 Term Objects Encoding
NAME_OP = 0x08              # DefName   := NameOp NameString DataRefObject
SCOPE_OP = 0x10             # DefScope  := ScopeOp PkgLength NameString TermList
BUFFER_OP = 0x11            # DefBuffer := BufferOp PkgLength BufferSize ByteList
PACKAGE_OP = 0x12           # DefPackage := PackageOp PkgLength NumElements PackageElementList
METHOD_OP = 0x14            # DefMethod := MethodOp PkgLength NameString MethodFlags TermList
EXT_OP_PREFIX = 0x5B
DEVICE_OP = 0x82            # DefDevice := ExtOpPrefix DeviceOp PkgLength NameString TermList
OP_REGION_OP = 0x80         # DefOpRegion := ExtOpPrefix OpRegionOp NameString RegionSpace RegionOffset RegionLen
FIELD_OP = 0x81             # DefField := ExtOpPrefix FieldOp PkgLength NameString FieldFlags FieldList
REGION_SYSTEM_IO = 0x01     # RegionSpace (§19.6.100 OperationRegion): SystemIO
FIELD_BYTE_ACC = 0x01       # FieldFlags bits 3:0 AccessType ByteAcc; bit 4 NoLock (0); bits 6:5 Preserve (0)
# §20.2.6 Data/Local/Arg objects
LOCAL0_OP = 0x60
ARG0_OP = 0x68
# §20.2.5.3 Statement opcodes, §20.2.5.4 Expression opcodes
IF_OP = 0xA0                # DefIfElse := IfOp PkgLength Predicate TermList DefElse
ELSE_OP = 0xA1
RETURN_OP = 0xA4
STORE_OP = 0x70             # DefStore := StoreOp TermArg SuperName
AND_OP = 0x7B               # DefAnd := AndOp Operand Operand Target
OR_OP = 0x7D
LEQUAL_OP = 0x93
LLESS_OP = 0x95
CREATE_DWORD_FIELD_OP = 0x8A   # DefCreateDWordField := CreateDWordFieldOp SourceBuff ByteIndex NameString
NULL_NAME = 0x00            # Target: none
# §6.4.2 Small Resource Data Type: tag byte = item name << 3 | length
IRQ_TAG = 0x22              # §6.4.2.1 IRQ Descriptor, 2 bytes follow (IRQNoFlags)
IO_TAG = 0x47               # §6.4.2.5 I/O Port Descriptor, 7 bytes follow
END_TAG = 0x79              # §6.4.2.9 End Tag, 1 byte (checksum) follows
IO_DECODE16 = 0x01          # I/O descriptor information bit 0: 16-bit address decode
# §6.4.3 Large Resource Data Type: tag byte = 0x80 | item name, then a 16-bit length
DWORD_ADDRESS_TAG = 0x87    # §6.4.3.5.2 DWord Address Space Descriptor, 23 bytes follow
EXT_IRQ_TAG = 0x89          # §6.4.3.6 Extended Interrupt Descriptor
# ... its Interrupt Vector Flags (byte 3)
EXT_IRQ_CONSUMER = 1 << 0   # ResourceConsumer
EXT_IRQ_EDGE = 1 << 1       # _HE: 1 edge, 0 level
EXT_IRQ_ACTIVE_LOW = 1 << 2  # _LL
EXT_IRQ_SHARED = 1 << 3     # _SHR
WORD_ADDRESS_TAG = 0x88     # §6.4.3.5.3 Word Address Space Descriptor, 13 bytes follow
# Address space descriptors: Resource Type (byte 3)
ADDRESS_MEMORY = 0
ADDRESS_IO = 1
ADDRESS_BUS_NUMBER = 2
# ... General Flags (byte 4).  Bit 0 clear: ResourceProducer (a bridge window;
# Linux turns only producer ranges into IORESOURCE_WINDOWs), PosDecode (bit 1 clear).
ADDRESS_CONSUMER = 1 << 0
ADDRESS_SUB_DECODE = 1 << 1
ADDRESS_MIN_FIXED = 1 << 2  # _MIF
ADDRESS_MAX_FIXED = 1 << 3  # _MAF
# ... Type Specific Flags (byte 5), §6.4.3.5.5 "Resource Type Specific Flags"
IO_RANGE_ENTIRE = 0x3       # I/O _RNG: ISA and non-ISA ranges (ASL EntireRange)
MEM_READ_WRITE = 1 << 0     # memory _RW
MEM_NON_CACHEABLE = 0 << 1  # memory _MEM (bits 2:1): NonCacheable, Cacheable (1), WriteCombining (2),
MEM_CACHEABLE = 1 << 1      #   Prefetchable (3); _MTP (bits 4:3) 0 = AddressRangeMemory

_LEAD_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_NAME_CHARS = _LEAD_CHARS | set("0123456789")


def pkg_length(payload: int) -> bytes:
    """PkgLength (§20.2.4) for ``payload`` bytes following it; the encoded
    length counts the PkgLength bytes themselves.  One byte holds up to 63;
    otherwise bits 7:6 of the lead byte say how many bytes follow (1-3), the
    lead byte's low nibble is the least significant, the rest follow in order."""
    if payload + 1 < 1 << 6:
        return bytes([payload + 1])
    for extra in (1, 2, 3):
        total = payload + 1 + extra
        if total < 1 << (4 + 8 * extra):
            return bytes([(extra << 6) | (total & 0xF)]) + (total >> 4).to_bytes(extra, "little")
    raise ValueError(f"AML package of {payload} bytes is too large")


def name_seg(seg: str) -> bytes:
    """NameSeg (§20.2.2): four characters, a lead of A-Z or '_', padded with '_'."""
    if not 1 <= len(seg) <= 4 or seg[0] not in _LEAD_CHARS or not set(seg) <= _NAME_CHARS:
        raise ValueError(f"bad AML name segment {seg!r}")
    return seg.ljust(4, "_").encode()


def name_string(path: str) -> bytes:
    """NameString (§20.2.2): ``"\\_SB_.COM1"``, ``"_HID"``, ``"^FOO"``."""
    prefix = b""
    if path.startswith("\\"):
        prefix, path = bytes([ROOT_CHAR]), path[1:]
    else:
        while path.startswith("^"):
            prefix, path = prefix + bytes([PARENT_PREFIX]), path[1:]
    segs = [name_seg(s) for s in path.split(".")] if path else []
    if not segs:
        return prefix + bytes([ZERO_OP])                  # NullName
    if len(segs) == 1:
        return prefix + segs[0]
    if len(segs) == 2:
        return prefix + bytes([DUAL_NAME_PREFIX]) + b"".join(segs)
    return prefix + bytes([MULTI_NAME_PREFIX, len(segs)]) + b"".join(segs)


def integer(value: int) -> bytes:
    """ComputationalData integer (§20.2.3), smallest encoding."""
    if value < 0 or value >= 1 << 64:
        raise ValueError(f"AML integer out of range: {value}")
    if value == 0:
        return bytes([ZERO_OP])
    if value == 1:
        return bytes([ONE_OP])
    for prefix, size in ((BYTE_PREFIX, 1), (WORD_PREFIX, 2), (DWORD_PREFIX, 4), (QWORD_PREFIX, 8)):
        if value < 1 << (8 * size):
            return bytes([prefix]) + value.to_bytes(size, "little")
    raise AssertionError("unreachable")


def string(text: str) -> bytes:
    """String (§20.2.3): StringPrefix AsciiCharList NullChar."""
    raw = text.encode("ascii")
    if b"\0" in raw:
        raise ValueError("AML strings cannot contain NUL")
    return bytes([STRING_PREFIX]) + raw + b"\0"


def _data(value: int | str | bytes) -> bytes:
    """An int or str becomes a data object; bytes are an already-encoded term."""
    if isinstance(value, bool):
        raise TypeError("use 0/1 for AML booleans")
    if isinstance(value, int):
        return integer(value)
    if isinstance(value, str):
        return string(value)
    return bytes(value)


def name(path: str, value: int | str | bytes) -> bytes:
    """Name(path, value) — DefName (§20.2.5.1)."""
    return bytes([NAME_OP]) + name_string(path) + _data(value)


def package(*elements: int | str | bytes) -> bytes:
    """Package() {elements} — DefPackage (§20.2.5.4)."""
    if len(elements) > 255:
        raise ValueError("a Package has at most 255 elements (use VarPackage)")
    body = bytes([len(elements)]) + b"".join(_data(e) for e in elements)
    return bytes([PACKAGE_OP]) + pkg_length(len(body)) + body


def buffer(data: bytes) -> bytes:
    """Buffer() {data} — DefBuffer (§20.2.5.4), BufferSize as an integer."""
    body = integer(len(data)) + bytes(data)
    return bytes([BUFFER_OP]) + pkg_length(len(body)) + body


def scope(path: str, *terms: bytes) -> bytes:
    """Scope(path) {terms} — DefScope (§20.2.5.1)."""
    body = name_string(path) + b"".join(terms)
    return bytes([SCOPE_OP]) + pkg_length(len(body)) + body


def device(path: str, *terms: bytes) -> bytes:
    """Device(path) {terms} — DefDevice (§20.2.5.2)."""
    body = name_string(path) + b"".join(terms)
    return bytes([EXT_OP_PREFIX, DEVICE_OP]) + pkg_length(len(body)) + body


def eisa_id(text: str) -> bytes:
    """EISAID("PNP0501") (ASL EISAID macro; _HID §6.1.5): three letters of 5
    bits each (A = 1) in bits 30:16 and four hex digits in bits 15:0, stored
    byte-swapped, always as a DWordConst."""
    if len(text) != 7 or not text[:3].isalpha() or not text[:3].isupper():
        raise ValueError(f"bad EISA id {text!r}")
    try:
        product = int(text[3:], 16)
    except ValueError:
        raise ValueError(f"bad EISA id {text!r}") from None
    vendor = 0
    for c in text[:3]:
        vendor = (vendor << 5) | (ord(c) - 0x40)
    value = (vendor << 16) | product
    return bytes([DWORD_PREFIX]) + value.to_bytes(4, "big")


def io_port(minimum: int, maximum: int, alignment: int, length: int) -> bytes:
    """IO(Decode16, min, max, align, len) — I/O Port Descriptor (§6.4.2.5)."""
    return bytes([IO_TAG, IO_DECODE16]) + minimum.to_bytes(2, "little") + maximum.to_bytes(2, "little") \
        + bytes([alignment, length])


def irq(*irqs: int) -> bytes:
    """IRQNoFlags() {irqs} — IRQ Descriptor (§6.4.2.1), 2-byte form: edge
    triggered, active high, exclusive."""
    mask = 0
    for n in irqs:
        if not 0 <= n < 16:
            raise ValueError(f"ISA IRQ {n} out of range")
        mask |= 1 << n
    return bytes([IRQ_TAG]) + mask.to_bytes(2, "little")


def _address_space(tag: int, width: int, resource_type: int, type_flags: int, minimum: int, maximum: int,
                   granularity: int, translation: int) -> bytes:
    """An Address Space Descriptor (§6.4.3.5) without a resource source: a
    ResourceProducer (a window the device forwards), MinFixed, MaxFixed,
    PosDecode; _LEN = max - min + 1 (what fixed min and max require)."""
    if not 0 <= minimum <= maximum < 1 << (8 * width):
        raise ValueError(f"bad address range {minimum:#x}-{maximum:#x} for a {8 * width}-bit descriptor")
    fields = (granularity, minimum, maximum, translation, maximum - minimum + 1)
    body = bytes([resource_type, ADDRESS_MIN_FIXED | ADDRESS_MAX_FIXED, type_flags]) \
        + b"".join(v.to_bytes(width, "little") for v in fields)
    return bytes([tag]) + len(body).to_bytes(2, "little") + body


def word_bus_number(minimum: int, maximum: int) -> bytes:
    """WordBusNumber(ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, min, max, 0, len)
    — Word Address Space Descriptor (§6.4.3.5.3), bus number range."""
    return _address_space(WORD_ADDRESS_TAG, 2, ADDRESS_BUS_NUMBER, 0, minimum, maximum, 0, 0)


def word_io(minimum: int, maximum: int) -> bytes:
    """WordIO(ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, min, max, 0, len)
    — Word Address Space Descriptor (§6.4.3.5.3), I/O window."""
    return _address_space(WORD_ADDRESS_TAG, 2, ADDRESS_IO, IO_RANGE_ENTIRE, minimum, maximum, 0, 0)


def dword_memory(minimum: int, maximum: int, cacheable: bool = False) -> bytes:
    """DWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable|Cacheable,
    ReadWrite, 0, min, max, 0, len) — DWord Address Space Descriptor (§6.4.3.5.2),
    memory window."""
    flags = MEM_READ_WRITE | (MEM_CACHEABLE if cacheable else MEM_NON_CACHEABLE)
    return _address_space(DWORD_ADDRESS_TAG, 4, ADDRESS_MEMORY, flags, minimum, maximum, 0, 0)


def resource_template(*descriptors: bytes) -> bytes:
    """ResourceTemplate() {descriptors}: a Buffer ending with an End Tag
    (§6.4.2.9) whose checksum byte is 0 ("treat as correct")."""
    return buffer(b"".join(descriptors) + bytes([END_TAG, 0]))


# ---------------------------------------------------------------- control methods
def ref(path: str) -> bytes:
    """A name used as an operand (a NameString: §20.2.2), e.g. ``store(arg(0), ref("PICF"))``."""
    return name_string(path)


def arg(n: int) -> bytes:
    """ArgN (§20.2.6.1), 0..6."""
    if not 0 <= n <= 6:
        raise ValueError(f"Arg{n}: 0..6")
    return bytes([ARG0_OP + n])


def local(n: int) -> bytes:
    """LocalN (§20.2.6.2), 0..7."""
    if not 0 <= n <= 7:
        raise ValueError(f"Local{n}: 0..7")
    return bytes([LOCAL0_OP + n])


def _operand(value: int | bytes) -> bytes:
    return integer(value) if isinstance(value, int) and not isinstance(value, bool) else bytes(value)


def method(path: str, nargs: int, *terms: bytes, serialized: bool = False) -> bytes:
    """Method(path, nargs, NotSerialized|Serialized) {terms} — DefMethod (§20.2.5.2);
    MethodFlags: bits 2:0 ArgCount, bit 3 SerializeFlag, bits 7:4 SyncLevel 0."""
    if not 0 <= nargs <= 7:
        raise ValueError(f"a method takes 0..7 arguments, not {nargs}")
    body = name_string(path) + bytes([nargs | (0x08 if serialized else 0)]) + b"".join(terms)
    return bytes([METHOD_OP]) + pkg_length(len(body)) + body


def return_(value: int | bytes) -> bytes:
    """Return(value) — DefReturn (§20.2.5.3)."""
    return bytes([RETURN_OP]) + _operand(value)


def store(source: int | bytes, target: bytes) -> bytes:
    """Store(source, target) — DefStore (§20.2.5.4)."""
    return bytes([STORE_OP]) + _operand(source) + bytes(target)


def _binary(op: int, a: int | bytes, b: int | bytes, target: bytes | None) -> bytes:
    return bytes([op]) + _operand(a) + _operand(b) + (bytes(target) if target is not None else bytes([NULL_NAME]))


def and_(a: int | bytes, b: int | bytes, target: bytes | None = None) -> bytes:
    """And(a, b[, target]) — DefAnd (§20.2.5.4)."""
    return _binary(AND_OP, a, b, target)


def or_(a: int | bytes, b: int | bytes, target: bytes | None = None) -> bytes:
    """Or(a, b[, target]) — DefOr (§20.2.5.4)."""
    return _binary(OR_OP, a, b, target)


def lless(a: int | bytes, b: int | bytes) -> bytes:
    """LLess(a, b) — DefLLess (§20.2.5.4)."""
    return bytes([LLESS_OP]) + _operand(a) + _operand(b)


def lequal(a: int | bytes, b: int | bytes) -> bytes:
    """LEqual(a, b) — DefLEqual (§20.2.5.4)."""
    return bytes([LEQUAL_OP]) + _operand(a) + _operand(b)


def if_(predicate: int | bytes, *terms: bytes) -> bytes:
    """If(predicate) {terms} — DefIfElse without its Else (§20.2.5.3)."""
    body = _operand(predicate) + b"".join(terms)
    return bytes([IF_OP]) + pkg_length(len(body)) + body


def else_(*terms: bytes) -> bytes:
    """Else {terms} — DefElse, right after an ``if_`` (§20.2.5.3)."""
    body = b"".join(terms)
    return bytes([ELSE_OP]) + pkg_length(len(body)) + body


def create_dword_field(source: bytes, byte_index: int | bytes, path: str) -> bytes:
    """CreateDWordField(source, index, name) — DefCreateDWordField (§20.2.5.2)."""
    return bytes([CREATE_DWORD_FIELD_OP]) + bytes(source) + _operand(byte_index) + name_string(path)


def operation_region_io(path: str, port: int, length: int) -> bytes:
    """OperationRegion(path, SystemIO, port, length) — DefOpRegion (§20.2.5.2)."""
    return bytes([EXT_OP_PREFIX, OP_REGION_OP]) + name_string(path) + bytes([REGION_SYSTEM_IO]) \
        + integer(port) + integer(length)


def field(region: str, *units: tuple[str | None, int]) -> bytes:
    """Field(region, ByteAcc, NoLock, Preserve) {NAME, bits, ...} — DefField (§20.2.5.2).
    ``units``: (name, bits), a None name is a reserved gap (``, bits``); each NamedField
    is NameSeg PkgLength(bits), a ReservedField 0x00 PkgLength(bits) (§20.2.5.2 FieldList)."""
    elements = b""
    for unit, bits in units:
        if bits <= 0:
            raise ValueError(f"field unit {unit!r}: {bits} bits")
        # The bit count is encoded as a PkgLength whose value is the count itself
        # (no "+ own size"): pkg_length(n) encodes n + its own length, so undo that.
        elements += (name_seg(unit) if unit is not None else bytes([NULL_NAME])) + _field_length(bits)
    body = name_string(region) + bytes([FIELD_BYTE_ACC]) + elements
    return bytes([EXT_OP_PREFIX, FIELD_OP]) + pkg_length(len(body)) + body


def _field_length(bits: int) -> bytes:
    """A FieldList unit's length: the PkgLength encoding of ``bits`` as a plain value."""
    if bits < 1 << 6:
        return bytes([bits])
    for extra in (1, 2, 3):
        if bits < 1 << (4 + 8 * extra):
            return bytes([(extra << 6) | (bits & 0xF)]) + (bits >> 4).to_bytes(extra, "little")
    raise ValueError(f"field of {bits} bits is too large")


def extended_interrupt(*irqs: int, edge: bool = False, active_low: bool = True, shared: bool = True) -> bytes:
    """Interrupt(ResourceConsumer, Level|Edge, ActiveLow|ActiveHigh, Shared|Exclusive) {irqs}
    — Extended Interrupt Descriptor (§6.4.3.6): flags, count, one DWord per interrupt
    number.  The default is a PCI interrupt: level-triggered, active-low, shared."""
    if not 1 <= len(irqs) <= 255:
        raise ValueError("an Interrupt descriptor lists 1..255 interrupts")
    flags = EXT_IRQ_CONSUMER | (EXT_IRQ_EDGE if edge else 0) | (EXT_IRQ_ACTIVE_LOW if active_low else 0) \
        | (EXT_IRQ_SHARED if shared else 0)
    body = bytes([flags, len(irqs)]) + b"".join(n.to_bytes(4, "little") for n in irqs)
    return bytes([EXT_IRQ_TAG]) + len(body).to_bytes(2, "little") + body
