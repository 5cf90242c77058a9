"""The smaller families: console_io, vm_assist, grant_table_op, and the
privileged ops a domU is refused.  (physdev_op: xen/ops/physdev_op.py.)"""

from __future__ import annotations

from xen import abi
from xen.gnttab import MAX_FRAMES
from xen.guest_access import GuestFault
from xen.hypercall import Hypercall, XenError
from xen.ops import check_domid
from xen.trace_events import TP_XEN_CONSOLE as TP_CONSOLE

CONSOLE_MAX = 16 << 10     # bytes taken from one CONSOLEIO_write (Xen copies in chunks; we cap)
CONSOLE_LINE_MAX = 200     # a line longer than this is flushed unfinished (Xen's DOMAIN_PBUF_SIZE)
# A domU's bytes are filtered before they reach the host's console (console.c
# guest_console_write "Strip non-printable characters"; console.h is_console_printable:
# isprint(c) || '\n' || '\t', with Xen's Latin-1 ctype table: 0x20-0x7e and 0xa0-0xff).
CONSOLE_STRIP = bytes(c for c in range(256)
                      if not (0x20 <= c <= 0x7E or c >= 0xA0 or c in b"\n\t"))
# Known vm_assist types for HVM (xen/include/asm-x86/config.h HVM_VM_ASSIST_MASK).
HVM_VM_ASSISTS = 1 << abi.VMASST_TYPE_runstate_update_flag


def handlers(domain):
    pending = bytearray()       # Xen buffers a domU's console output per line (guest_console_write)

    def console_io(call: Hypercall) -> int:
        cmd, count, buf = call.args[0] & 0xFFFFFFFF, call.args[1] & 0xFFFFFFFF, call.args[2]   # (int, unsigned int, ...)
        if cmd == abi.CONSOLEIO_write:
            n = min(count, CONSOLE_MAX)
            data = call.mem.read(buf, n)
            if TP_CONSOLE.enabled:
                TP_CONSOLE.emit(call.vcpu_id, vcpu=call.vcpu_id, n=n)
            with domain.lock:
                pending.extend(data.translate(None, CONSOLE_STRIP))
                out = []
                while True:
                    nl = pending.find(b"\n")
                    if nl < 0 and len(pending) < CONSOLE_LINE_MAX:
                        break
                    end = nl + 1 if nl >= 0 else CONSOLE_LINE_MAX
                    out.append(b"(d%d) " % domain.domid + bytes(pending[:end]))
                    del pending[:end]
            for line in out:
                domain.console_out(line)
            return 0
        # xsm_console_io: only writes are open to a domU (as a debug Xen, and QEMU); the rest is XSM_PRIV.
        raise XenError(abi.XenErrno.EPERM, f"CONSOLEIO {cmd} is dom0's")

    def vm_assist(call: Hypercall) -> int:
        cmd, typ = call.args[0] & 0xFFFFFFFF, call.args[1] & 0xFFFFFFFF   # (unsigned int, unsigned int)
        if typ >= 64 or not HVM_VM_ASSISTS >> typ & 1:
            raise XenError(abi.XenErrno.EINVAL, f"vm_assist type {typ}")
        if cmd == abi.VMASST_CMD_enable:
            domain.vm_assists |= 1 << typ
        elif cmd == abi.VMASST_CMD_disable:
            domain.vm_assists &= ~(1 << typ)
        else:
            raise XenError(abi.XenErrno.ENOSYS, f"vm_assist cmd {cmd}")
        return 0

    def grant_table_op(call: Hypercall) -> int:
        cmd, arg, count = call.args[0] & 0xFFFFFFFF, call.args[1], call.args[2] & 0xFFFFFFFF   # (unsigned int, ...)
        gt = domain.gnttab
        call.tracing and call.note(f"cmd={abi.GNTTABOP(cmd).name if cmd in abi.GNTTABOP._value2member_map_ else cmd} count={count}")
        if cmd in (abi.GNTTABOP_query_size, abi.GNTTABOP_set_version, abi.GNTTABOP_get_version,
                   abi.GNTTABOP_setup_table) and count != 1:
            raise XenError(abi.XenErrno.EINVAL, f"count {count}")   # do_grant_table_op: these take one
        if cmd == abi.GNTTABOP_query_size:
            st = abi.layout(abi.gnttab_query_size, call.abi)
            q = call.mem.read_struct(st, arg)
            if q.dom not in (abi.DOMID_SELF, domain.domid):
                q.status = abi.GNTST_bad_domain
            else:
                q.nr_frames, q.max_nr_frames, q.status = gt.nr_frames, MAX_FRAMES, abi.GNTST_okay
            call.mem.write_struct(st, arg, q)
            return 0
        if cmd == abi.GNTTABOP_set_version:
            st = abi.layout(abi.gnttab_set_version, call.abi)
            v = call.mem.read_struct(st, arg)
            want = v.version
            v.version = gt.version
            call.mem.write_struct(st, arg, v)
            if want == 1:
                return 0
            if want == 2:
                raise XenError(abi.XenErrno.ENOSYS, "v2 disabled: behave as before set_version")
            raise XenError(abi.XenErrno.EINVAL, f"version {want}")
        if cmd == abi.GNTTABOP_get_version:
            st = abi.layout(abi.gnttab_get_version, call.abi)
            v = call.mem.read_struct(st, arg)
            check_domid(domain, v.dom)
            v.version = gt.version
            call.mem.write_struct(st, arg, v)
            return 0
        if cmd == abi.GNTTABOP_setup_table:
            st = abi.layout(abi.gnttab_setup_table, call.abi)
            s = call.mem.read_struct(st, arg)
            if s.dom not in (abi.DOMID_SELF, domain.domid):
                s.status = abi.GNTST_bad_domain
            elif s.nr_frames > MAX_FRAMES:
                s.status = abi.GNTST_general_error
            else:
                with gt.lock:
                    gt.nr_frames = max(gt.nr_frames, s.nr_frames)
                # A frame_list the guest can't take is the op's status, not the call's
                # errno: Xen copies frame by frame (earlier ones stay written), sets
                # GNTST_bad_virt_addr at the first fault and still returns 0; only a
                # status it can't write back is -EFAULT (gnttab_setup_table).
                word = 4 if call.compat else 8
                s.status = abi.GNTST_okay
                for i in range(s.nr_frames):
                    gfn = gt.frame_gfn(i) & ((1 << 8 * word) - 1)
                    try:
                        call.mem.write(s.frame_list + i * word, gfn.to_bytes(word, "little"))
                    except GuestFault:
                        s.status = abi.GNTST_bad_virt_addr
                        break
            call.mem.write_struct(st, arg, s)
            return 0
        raise XenError(abi.XenErrno.ENOSYS, f"GNTTABOP {cmd}")

    def privileged(call: Hypercall) -> int:
        raise XenError(abi.XenErrno.EPERM, "privileged")

    return {abi.Hypercall.console_io: console_io,
            abi.Hypercall.vm_assist: vm_assist,
            abi.Hypercall.grant_table_op: grant_table_op,
            abi.Hypercall.domctl: privileged,
            abi.Hypercall.sysctl: privileged,
            abi.Hypercall.platform_op: privileged}
