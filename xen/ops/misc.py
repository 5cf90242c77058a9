"""The smaller families: console_io, vm_assist, grant_table_op, and the
privileged ops a domU is refused.  (physdev_op: xen/ops/physdev_op.py.)"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from xen import abi
from xen.gnttab import MAX_FRAMES
from xen.guest_access import GuestFault
from xen.hypercall import Hypercall, XenError
from xen.ops import check_domid
from xen.trace_events import TP_XEN_CONSOLE as TP_CONSOLE

if TYPE_CHECKING:
    from xen.gnttab import GrantTable
    from xen.vcpus import XenVcpus

CONSOLE_MAX = 16 << 10     # bytes taken from one CONSOLEIO_write (Xen copies in chunks; we cap)
CONSOLE_LINE_MAX = 200     # a line longer than this is flushed unfinished (Xen's DOMAIN_PBUF_SIZE)
# A domU's bytes are filtered before they reach the host's console (console.c
# guest_console_write "Strip non-printable characters"; console.h is_console_printable:
# isprint(c) || '\n' || '\t', with Xen's Latin-1 ctype table: 0x20-0x7e and 0xa0-0xff).
CONSOLE_STRIP = bytes(c for c in range(256)
                      if not (0x20 <= c <= 0x7E or c >= 0xA0 or c in b"\n\t"))
# Known vm_assist types for HVM (xen/include/asm-x86/config.h HVM_VM_ASSIST_MASK).
HVM_VM_ASSISTS = 1 << abi.VMASST_TYPE_runstate_update_flag


class ConsoleOps:
    """console_io: a domU's CONSOLEIO_write, line-buffered (guest_console_write) to
    ``console_out``; ``lock`` (the domain lock) guards the line."""

    def __init__(self, console_out: Callable[[bytes], None], lock, domid: int):
        self.console_out = console_out
        self.lock = lock
        self.domid = domid
        self.pending = bytearray()

    def handlers(self) -> dict:
        return {abi.Hypercall.console_io: self.console_io}

    def console_io(self, call: Hypercall) -> int:
        cmd, count, buf = call.args[0] & 0xFFFFFFFF, call.args[1] & 0xFFFFFFFF, call.args[2]   # (int, unsigned int, ...)
        if cmd != abi.CONSOLEIO_write:
            # xsm_console_io: only writes are open to a domU (as a debug Xen, and QEMU); the rest is XSM_PRIV.
            raise XenError(abi.XenErrno.EPERM, f"CONSOLEIO {cmd} is dom0's")
        n = min(count, CONSOLE_MAX)
        data = call.mem.read(buf, n)
        if TP_CONSOLE.enabled:
            TP_CONSOLE.emit(call.vcpu_id, vcpu=call.vcpu_id, n=n)
        pending = self.pending
        with self.lock:
            pending.extend(data.translate(None, CONSOLE_STRIP))
            out = []
            while True:
                nl = pending.find(b"\n")
                if nl < 0 and len(pending) < CONSOLE_LINE_MAX:
                    break
                end = nl + 1 if nl >= 0 else CONSOLE_LINE_MAX
                out.append(b"(d%d) " % self.domid + bytes(pending[:end]))
                del pending[:end]
        for line in out:
            self.console_out(line)
        return 0


class VmAssistOps:
    def __init__(self, vcpus: "XenVcpus"):
        self.vcpus = vcpus            # holds the domain's VMASST bits (runstate_update_flag)

    def handlers(self) -> dict:
        return {abi.Hypercall.vm_assist: self.vm_assist}

    def vm_assist(self, call: Hypercall) -> int:
        cmd, typ = call.args[0] & 0xFFFFFFFF, call.args[1] & 0xFFFFFFFF   # (unsigned int, unsigned int)
        if typ >= 64 or not HVM_VM_ASSISTS >> typ & 1:
            raise XenError(abi.XenErrno.EINVAL, f"vm_assist type {typ}")
        if cmd == abi.VMASST_CMD_enable:
            self.vcpus.vm_assists |= 1 << typ
        elif cmd == abi.VMASST_CMD_disable:
            self.vcpus.vm_assists &= ~(1 << typ)
        else:
            raise XenError(abi.XenErrno.ENOSYS, f"vm_assist cmd {cmd}")
        return 0


class GrantTableOps:
    ONE_ONLY = (abi.GNTTABOP_query_size, abi.GNTTABOP_set_version, abi.GNTTABOP_get_version,
                abi.GNTTABOP_setup_table)          # do_grant_table_op: these take count 1

    def __init__(self, gnttab: "GrantTable", domid: int):
        self.gt = gnttab
        self.domid = domid
        self.ops = {abi.GNTTABOP_query_size: self.query_size, abi.GNTTABOP_set_version: self.set_version,
                    abi.GNTTABOP_get_version: self.get_version, abi.GNTTABOP_setup_table: self.setup_table}

    def handlers(self) -> dict:
        return {abi.Hypercall.grant_table_op: self.grant_table_op}

    def grant_table_op(self, call: Hypercall) -> int:
        cmd, arg, count = call.args[0] & 0xFFFFFFFF, call.args[1], call.args[2] & 0xFFFFFFFF   # (unsigned int, ...)
        call.tracing and call.note(f"cmd={abi.GNTTABOP(cmd).name if cmd in abi.GNTTABOP._value2member_map_ else cmd} count={count}")
        if cmd in self.ONE_ONLY and count != 1:
            raise XenError(abi.XenErrno.EINVAL, f"count {count}")
        op = self.ops.get(cmd)
        if op is None:
            raise XenError(abi.XenErrno.ENOSYS, f"GNTTABOP {cmd}")
        return op(call, arg)

    def query_size(self, call: Hypercall, arg: int) -> int:
        st = abi.layout(abi.gnttab_query_size, call.abi)
        q = call.mem.read_struct(st, arg)
        if q.dom not in (abi.DOMID_SELF, self.domid):
            q.status = abi.GNTST_bad_domain
        else:
            q.nr_frames, q.max_nr_frames, q.status = self.gt.nr_frames, MAX_FRAMES, abi.GNTST_okay
        call.mem.write_struct(st, arg, q)
        return 0

    def set_version(self, call: Hypercall, arg: int) -> int:
        st = abi.layout(abi.gnttab_set_version, call.abi)
        v = call.mem.read_struct(st, arg)
        want = v.version
        v.version = self.gt.version
        call.mem.write_struct(st, arg, v)
        if want == 1:
            return 0
        if want == 2:
            raise XenError(abi.XenErrno.ENOSYS, "v2 disabled: behave as before set_version")
        raise XenError(abi.XenErrno.EINVAL, f"version {want}")

    def get_version(self, call: Hypercall, arg: int) -> int:
        st = abi.layout(abi.gnttab_get_version, call.abi)
        v = call.mem.read_struct(st, arg)
        check_domid(v.dom, self.domid)
        v.version = self.gt.version
        call.mem.write_struct(st, arg, v)
        return 0

    def setup_table(self, call: Hypercall, arg: int) -> int:
        gt = self.gt
        st = abi.layout(abi.gnttab_setup_table, call.abi)
        s = call.mem.read_struct(st, arg)
        if s.dom not in (abi.DOMID_SELF, self.domid):
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


class PrivilegedOps:
    """domctl, sysctl, platform_op: the toolstack's and dom0's."""

    def handlers(self) -> dict:
        return {abi.Hypercall.domctl: self.privileged, abi.Hypercall.sysctl: self.privileged,
                abi.Hypercall.platform_op: self.privileged}

    def privileged(self, call: Hypercall) -> int:
        raise XenError(abi.XenErrno.EPERM, "privileged")
