"""Grant table, v1 only (public/grant_table.h; xen/common/grant_table.c).

For now: the frames' placement (XENMEM_add_to_physmap XENMAPSPACE_grant_table
puts frame ``idx`` at a guest page, which then *is* that frame, as with
shared_info), and the table ops an HVM guest may use to set itself up.
Mapping and copying grants come with the PV backends.
"""

from __future__ import annotations

import threading

from xen import abi
from xen.hypercall import XenError
from vmm.locks import ordered_lock
from vmm.x86 import PAGE_SIZE

MAX_FRAMES = 64            # QEMU's and Xen's default max_grant_frames
INVALID_GFN = (1 << 64) - 1


class GrantTable:
    """``placement``: xen/placement.py PagePlacement (a frame outside RAM gets an overlay)."""

    def __init__(self, memory, placement):
        self.memory = memory
        self.placement = placement
        self.lock = ordered_lock("xen.gnttab")
        self.version = 1
        self.nr_frames = 1
        self.frames: dict[int, int] = {}     # frame index -> gpa

    # snapshot: version, size, the frames' gpas (their content is memory; their placement PagePlacement's)
    def save(self) -> dict:
        with self.lock:
            return {"version": self.version, "nr_frames": self.nr_frames,
                    "frames": {str(k): v for k, v in self.frames.items()}}

    def restore(self, state: dict) -> None:
        with self.lock:
            self.version, self.nr_frames = state["version"], state["nr_frames"]
            self.frames = {int(k): v for k, v in state["frames"].items()}

    def map_frame(self, idx: int, gpa: int) -> None:
        """Frame ``idx`` moves to ``gpa`` (RAM, or a PCI MMIO page: PagePlacement.place_page)
        with its contents; a frame that was at ``gpa`` is no longer mapped anywhere."""
        if idx & abi.XENMAPIDX_grant_table_status:
            raise XenError(abi.XenErrno.EINVAL, "no status frames in v1")
        if idx >= MAX_FRAMES:
            raise XenError(abi.XenErrno.EINVAL, f"grant frame {idx} >= {MAX_FRAMES}")
        mem = self.memory
        with self.lock:
            old = self.frames.get(idx)
            self.placement.place_page(gpa, ("grant", idx))
            mem.write(gpa, mem.read(old, PAGE_SIZE) if old is not None else bytes(PAGE_SIZE))
            for other in [i for i, g in self.frames.items() if g == gpa and i != idx]:
                del self.frames[other]
            self.frames[idx] = gpa
            self.nr_frames = max(self.nr_frames, idx + 1)
            if old is not None and old != gpa:
                self.placement.release_page(old, ("grant", idx))

    def frame_gfn(self, idx: int) -> int:
        gpa = self.frames.get(idx)
        return INVALID_GFN if gpa is None else gpa >> 12
