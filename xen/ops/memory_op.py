"""__HYPERVISOR_memory_op (public/memory.h; xen/common/memory.c, x86 arch_memory_op).

The command word carries a continuation start extent in its high bits
(MEMOP_EXTENT_SHIFT = 6); we finish every call at once, so only the low bits
name the op.  Reservation ops record what the guest gives back and takes
again (a balloon), without unmapping: a guest touching a page it returned is
its own bug, as on Xen where it would fault.
"""

from __future__ import annotations

from xen import abi
from xen.guest_access import MAX_COPY, GuestFault
from xen.hypercall import Hypercall, XenError
from xen.ops import check_domid
from vmm.x86 import PAGE_SHIFT, PAGE_SIZE

MAX_ORDER = 9                      # common/memory.c max_order(): CONFIG_DOMU_MAX_ORDER, 9 by default


def handlers(domain):
    mem = domain.vm.memory
    ram_pages = sum(r.size for r in mem.ram_regions) >> PAGE_SHIFT
    max_pfn = max(r.end for r in mem.ram_regions) >> PAGE_SHIFT

    def add_to_physmap_one(call: Hypercall, space: int, idx: int, gpfn: int) -> None:
        gpa = gpfn << PAGE_SHIFT
        if space == abi.XENMAPSPACE_shared_info:
            if idx != 0:
                raise XenError(abi.XenErrno.EINVAL, "shared_info idx")
            with domain.lock:                 # one move at a time: place, copy, release the old
                old = domain.shared.gpa
                domain.place_page(gpa, "shared_info")      # RAM, or an overlay outside it
                domain.shared.latch_width(call.compat)   # hvm_latch_shinfo_size
                domain.shared.map_at(gpa)
                if old is not None and old != gpa:
                    domain.release_page(old, "shared_info")
            domain.shared_info_mapped(gpa)
            call.tracing and call.note(f"shared_info -> {gpa:#x}")
        elif space == abi.XENMAPSPACE_grant_table:
            domain.gnttab.map_frame(idx, gpa)
            call.tracing and call.note(f"grant frame {idx:#x} -> {gpa:#x}")
        elif space in (abi.XENMAPSPACE_gmfn, abi.XENMAPSPACE_gmfn_range, abi.XENMAPSPACE_gmfn_foreign,
                       abi.XENMAPSPACE_dev_mmio):
            raise XenError(abi.XenErrno.EOPNOTSUPP, f"space {space} is not supported by this VMM")
        else:
            raise XenError(abi.XenErrno.EINVAL, f"space {space}")

    def reservation(call: Hypercall, op: int) -> int:
        """Returns the number of extents done; every failure is "0 done", never an
        errno (xen/common/memory.c: copy_from_guest failures, unknown domains and
        bad handle ranges all `return start_extent`)."""
        st = abi.layout(abi.xen_memory_reservation, call.abi)
        try:
            r = call.mem.read_struct(st, call.args[1])
        except GuestFault:
            return 0
        if r.domid not in (abi.DOMID_SELF, domain.domid) or r.extent_order > MAX_ORDER:
            return 0
        word = 4 if call.compat else 8
        if r.extent_start == 0 or r.nr_extents * word > MAX_COPY:
            return 0     # no list, or one no guest can hold: the handle range check fails
        done = 0
        for i in range(r.nr_extents):
            try:
                gpfn = int.from_bytes(call.mem.read(r.extent_start + i * word, word), "little")
            except GuestFault:
                break                             # Xen stops at a bad handle and reports extents done
            pages = range(gpfn, gpfn + (1 << r.extent_order))
            if op == abi.XENMEM_decrease_reservation:
                # guest_remove_page() fails on a gfn that holds no RAM (a hole, or one
                # given back already): the call stops there.  So the work of any call
                # is bounded by the RAM it really returns.
                if not mem.is_ram(gpfn << PAGE_SHIFT, len(pages) << PAGE_SHIFT) or any(p in domain.removed_gfns for p in pages):
                    break
                domain.removed_gfns.update(pages)
            else:                                 # increase / populate: only what was given back
                if not all(p in domain.removed_gfns for p in pages):
                    break
                domain.removed_gfns.difference_update(pages)
                for p in pages:                   # a repopulated page is a fresh one: zeroed
                    if mem.is_ram(p << PAGE_SHIFT, PAGE_SIZE):
                        mem.fill(p << PAGE_SHIFT, PAGE_SIZE)
            done += 1
        call.tracing and call.note(f"{done}/{r.nr_extents} extents of order {r.extent_order}")
        return done

    def memory_op(call: Hypercall) -> int:
        cmd = call.args[0] & abi.MEMOP_CMD_MASK
        arg = call.args[1]
        call.tracing and call.note(f"cmd={abi.XENMEM(cmd).name if cmd in abi.XENMEM._value2member_map_ else cmd}")
        if cmd in (abi.XENMEM_decrease_reservation, abi.XENMEM_increase_reservation,
                   abi.XENMEM_populate_physmap):
            return reservation(call, cmd)
        if cmd == abi.XENMEM_maximum_ram_page:
            return max_pfn
        if cmd in (abi.XENMEM_current_reservation, abi.XENMEM_maximum_reservation, abi.XENMEM_maximum_gpfn):
            check_domid(domain, call.mem.read_struct(abi.layout(abi.xen_memory_domain, call.abi), arg).domid)
            if cmd == abi.XENMEM_maximum_gpfn:
                return max_pfn - 1
            return ram_pages - (len(domain.removed_gfns) if cmd == abi.XENMEM_current_reservation else 0)
        if cmd == abi.XENMEM_add_to_physmap:
            st = abi.layout(abi.xen_add_to_physmap, call.abi)
            x = call.mem.read_struct(st, arg)
            check_domid(domain, x.domid)
            if x.space == abi.XENMAPSPACE_gmfn_foreign:
                raise XenError(abi.XenErrno.ENOSYS, "gmfn_foreign only in the batch op")   # common/memory.c
            if x.space == abi.XENMAPSPACE_gmfn_range:
                raise XenError(abi.XenErrno.EOPNOTSUPP, "gmfn_range")
            add_to_physmap_one(call, x.space, x.idx, x.gpfn)
            return 0
        if cmd == abi.XENMEM_add_to_physmap_batch:
            st = abi.layout(abi.xen_add_to_physmap_batch, call.abi)
            b = call.mem.read_struct(st, arg)
            check_domid(domain, b.domid)
            if b.space == abi.XENMAPSPACE_gmfn_range:
                raise XenError(abi.XenErrno.EOPNOTSUPP, "gmfn_range in a batch")   # common/memory.c
            word = 4 if call.compat else 8
            # Element by element, as xenmem_add_to_physmap_batch: an element's own failure
            # goes to errs[i]; a handle that faults ends the call with -EFAULT (GuestFault)
            # after the elements before it were done and their errs written; an idx/gpfn of
            # INVALID_GFN ends it with -EINVAL.  size is a uint16_t: at most 65535 entries.
            for i in range(b.size):
                idx = int.from_bytes(call.mem.read(b.idxs + i * word, word), "little")
                gpfn = int.from_bytes(call.mem.read(b.gpfns + i * word, word), "little")
                if gpfn == (1 << 8 * word) - 1:
                    raise XenError(abi.XenErrno.EINVAL, f"errs[{i}]: gpfn INVALID_GFN")
                try:
                    add_to_physmap_one(call, b.space, idx, gpfn)
                    err = 0
                except XenError as e:
                    err = -e.errno
                call.mem.write(b.errs + i * 4, (err & 0xFFFFFFFF).to_bytes(4, "little"))
            return 0
        if cmd == abi.XENMEM_memory_map:
            st = abi.layout(abi.xen_memory_map, call.abi)
            m = call.mem.read_struct(st, arg)
            ent = abi.layout(abi.e820entry, call.abi)
            table = mem.e820()
            n = min(m.nr_entries, len(table))
            call.mem.write(m.buffer, b"".join(ent.build(dict(addr=a, size=s, type=t)) for a, s, t in table[:n]))
            m.nr_entries = n
            call.mem.write_struct(st, arg, m)
            return 0
        raise XenError(abi.XenErrno.ENOSYS, f"XENMEM {cmd}")

    return {abi.Hypercall.memory_op: memory_op}
