"""The C kit's copy of the Xen ABI (guest-images/kit/xen.h) agrees with xen/abi.

The kit guests are written against their own header, the VMM against xen/abi:
two copies of the same public headers.  The host gcc compiles a probe file that
includes the kit's header and takes sizeof/offsetof of every struct the header
declares that xen/abi declares too (``compat_X`` is X's 32-bit layout), for every
top-level field xen/abi names; the values are read back from the assembly
(nothing is linked or run).  Fields the kit leaves out or names differently are
skipped, found from gcc's "has no member" errors.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from xen import abi

ROOT = Path(__file__).resolve().parent.parent
KIT = ROOT / "guest-images" / "kit"

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs the host gcc")


def kit_structs() -> list[str]:
    return sorted(set(re.findall(r"^struct (\w+) \{", (KIT / "xen.h").read_text(), re.M)))


def compile_probes(probes: list[str], tmp: Path) -> tuple[str, str]:
    src = tmp / "probe.c"
    src.write_text('#include <stddef.h>\n#include "xen.h"\n' +
                   "".join(f"const unsigned long probe_{i} = {p};\n" for i, p in enumerate(probes)))
    r = subprocess.run(["gcc", "-S", "-o", "-", "-ffreestanding", "-w", f"-I{KIT}", str(src)],
                       capture_output=True, text=True, timeout=120)
    return r.stdout if r.returncode == 0 else "", r.stderr


def test_kit_header_layouts_match_xen_abi(tmp_path):
    expected: dict[str, int] = {}            # C expression -> xen/abi's value
    for name in kit_structs():
        base, which = (name[len("compat_"):], "32") if name.startswith("compat_") else (name, "64")
        st = abi.STRUCTS.get(base)
        if st is None:
            continue                         # the kit's own structs (xen_info, stats)
        v = st.variants[which]
        expected[f"sizeof(struct {name})"] = v.size
        for field, off in v.offsets.items():
            expected[f"offsetof(struct {name}, {field})"] = off
    assert sum(e.startswith("sizeof") for e in expected) >= 30, "the kit declares the Xen structs"

    probes = list(expected)
    for _ in range(3):                       # drop the fields the kit doesn't have, recompile
        asm, err = compile_probes(probes, tmp_path)
        if asm:
            break
        bad = {int(n) for n in re.findall(r"probe\.c:(\d+):\d+: error: .* has no member named", err)}
        assert bad, err                      # any other error is a broken probe or header
        probes = [p for i, p in enumerate(probes) if i + 3 not in bad]    # probe i is on line i + 3
    assert asm, err
    # gcc writes a zero as ".zero 8", anything else as ".quad N"
    got = {probes[int(i)]: int(v or 0)
           for i, v in re.findall(r"^probe_(\d+):\s*\n\s*\.(?:quad\s+(\d+)|zero\s+8)", asm, re.M)}
    assert len(got) == len(probes)
    offsets = [p for p in got if p.startswith("offsetof")]
    assert len(offsets) >= 100, f"only {len(offsets)} fields compared"
    wrong = {p: (got[p], expected[p]) for p in got if got[p] != expected[p]}
    assert not wrong, f"kit xen.h vs xen/abi (kit, abi): {wrong}"
