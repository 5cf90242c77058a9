"""Every trace point of xen/, declared once (QEMU's trace-events file).

Modules take their points from here, as module-level objects whose ``enabled`` is a
plain attribute (a disabled point costs one attribute load and a branch), e.g.
``from xen.trace_events import TP_XEN_HCALL as TP_HCALL``.  A constant is ``TP_`` and the point's
name in capitals.  ``vmm trace-points`` lists every point with its fields;
tests/test_trace_points.py fails on a point declared here and emitted nowhere, on an
emit of a point declared nowhere, and on ARCHITECTURE.md's list disagreeing.
"""

from __future__ import annotations

from vmm.trace import TraceTable

T = TraceTable("xen")

# xen/hypercall.py: name, decoded arguments, result; a slice in a Perfetto trace
TP_XEN_HCALL = T.point("xen.hcall", "{name}({args}) = {result}")

# xen/transport.py
TP_XEN_HCALL_PAGE = T.point("xen.hcall_page", "gpa={gpa:#x} transport={transport} {result}")
TP_XEN_MSR = T.point("xen.msr", "{dir} index={index:#x} value={value:#x} {result}")

# xen/domain.py
TP_XEN_DOMAIN = T.point("xen.domain", "{what}")

# xen/kvm_accel.py: KVM's Xen acceleration
TP_XEN_KVM = T.point("xen.kvm", "{what}")

# xen/evtchn.py
TP_XEN_EVTCHN_BIND = T.point("xen.evtchn.bind", "port={port} kind={kind} {detail} vcpu={vcpu}")
TP_XEN_EVTCHN_CLOSE = T.point("xen.evtchn.close", "port={port} was={kind}")
TP_XEN_EVTCHN_SEND = T.point("xen.evtchn.send", "port={port} -> port={target}")
TP_XEN_EVTCHN_SET_PENDING = T.point("xen.evtchn.set_pending", "port={port} vcpu={vcpu} {result}")
TP_XEN_EVTCHN_UNMASK = T.point("xen.evtchn.unmask", "port={port} {result}")
TP_XEN_EVTCHN_FIFO = T.point("xen.evtchn.fifo", "{what}")      # FIFO ABI setup: init_control, expand_array

# xen/upcall.py
TP_XEN_EVTCHN_UPCALL = T.point("xen.evtchn.upcall", "vcpu={vcpu} via={via}")
TP_XEN_CALLBACK = T.point("xen.callback", "type={type} value={value:#x} {detail}")

# xen/pirq.py (xen.pirq.deliver: xen/evtchn.py, a slice in a Perfetto trace)
TP_XEN_PIRQ_MAP = T.point("xen.pirq.map", "pirq={pirq} -> {what} {result}")
TP_XEN_PIRQ_UNMAP = T.point("xen.pirq.unmap", "pirq={pirq} was={what}")
TP_XEN_PIRQ_BIND = T.point("xen.pirq.bind", "pirq={pirq} port={port} {detail}")
TP_XEN_PIRQ_UNBIND = T.point("xen.pirq.unbind", "pirq={pirq} port={port}")
TP_XEN_PIRQ_ASSERT = T.point("xen.pirq.assert", "gsi={gsi} level={level} pirq={pirq} {result}")
TP_XEN_PIRQ_MSI_SNOOP = T.point("xen.pirq.msi_snoop", "{vec} pirq={pirq} {what}")
TP_XEN_PIRQ_DELIVER = T.point("xen.pirq.deliver", "pirq={pirq} port={port} via={via} {result}")
TP_XEN_PIRQ_EOI = T.point("xen.pirq.eoi", "pirq={pirq} {result}")
TP_XEN_PIRQ_REASSERT = T.point("xen.pirq.reassert", "pirq={pirq} gsi={gsi}")

# xen/time.py
TP_XEN_TIMER_SET = T.point("xen.timer.set", "vcpu={vcpu} kind={kind} deadline_ns={deadline} in_ns={delta}")
TP_XEN_TIMER_STOP = T.point("xen.timer.stop", "vcpu={vcpu} kind={kind}")
TP_XEN_TIMER_FIRE = T.point("xen.timer.fire", "vcpu={vcpu} kind={kind} late_ns={late}")
TP_XEN_PVCLOCK = T.point("xen.pvclock", "vcpu={vcpu} system_time={system_time} tsc={tsc} mul={mul:#x} shift={shift}")

# xen/ops/misc.py
TP_XEN_CONSOLE = T.point("xen.console", "vcpu={vcpu} bytes={n}")

# xen/pv_console.py: the PV console ring (the VMM as xenconsoled)
TP_XEN_PVCONSOLE_OUT = T.point("xen.pvconsole.out", "bytes={n} {result}")
TP_XEN_PVCONSOLE_IN = T.point("xen.pvconsole.in", "bytes={n} queued={queued}")

# xen/xenstore/: one request (type, canonical path or first argument, tx id, result "OK" or the
# error name); a watch event queued to a connection; the ring page (errors, reconnection)
TP_XEN_XENSTORE_REQ = T.point("xen.xenstore.req", "dom={dom} {type} path={path} tx={tx} {result}")
TP_XEN_XENSTORE_WATCH_EVENT = T.point("xen.xenstore.watch_event", "dom={dom} path={path} token={token}")
TP_XEN_XENSTORE_RING = T.point("xen.xenstore.ring", "dom={dom} {what}")

# xen/platform_pci.py
TP_XEN_PLATFORM_UNPLUG = T.point("xen.platform.unplug", "mask={mask:#x} devices={devices} via={via}")
TP_XEN_PLATFORM_LOG = T.point("xen.platform.log", "{line}")
TP_XEN_PLATFORM_DRIVER = T.point("xen.platform.driver", "product={product:#x} ({name}) build={build:#x} "
                                                        "blacklisted={blacklisted}")
