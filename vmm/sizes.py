"""Parsing of human size strings (``--memory 512M``)."""

import re

from vmm.errors import UserError

_UNITS = {"": 1 << 20, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str, what: str = "size") -> int:
    """'512M' -> bytes.  A bare number means MiB (as QEMU's -m).  Binary units."""
    m = _RE.match(text)
    if not m:
        raise UserError(f"{what}: bad size {text!r} (use e.g. 512M or 2G)")
    n = int(m.group(1)) * _UNITS[m.group(2).upper()]
    if n == 0:
        raise UserError(f"{what}: size must not be zero")
    return n
