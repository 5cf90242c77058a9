"""Every trace point of vmm/, declared once (QEMU's trace-events file).

Modules take their points from here, as module-level objects whose ``enabled`` is a
plain attribute (a disabled point costs one attribute load and a branch), e.g.
``from vmm.trace_events import TP_VCPU_EXIT_IO as TP_EXIT_IO``.  A constant is ``TP_`` and the point's
name in capitals.  ``vmm trace-points`` lists every point with its fields;
tests/test_trace_points.py fails on a point declared here and emitted nowhere, on an
emit of a point declared nowhere, and on ARCHITECTURE.md's list disagreeing.
"""

from __future__ import annotations

from vmm.trace import TraceTable

T = TraceTable("vmm")

# vmm/vcpu.py: one point per kind of exit, emitted once it is handled; in a Perfetto
# trace each is a slice on its vCPU's track, from the exit to the end of its handling.
TP_VCPU_EXIT_IO = T.point("vcpu.exit.io", "port={port:#x} size={size} dir={dir} value={value:#x} count={count} "
                                          "dev={dev}")
TP_VCPU_EXIT_MMIO = T.point("vcpu.exit.mmio", "addr={addr:#x} len={len} dir={dir} value={value:#x} dev={dev}")
TP_VCPU_EXIT_MSR = T.point("vcpu.exit.msr", "index={index:#x} dir={dir} value={value:#x} handled={handled}")
TP_VCPU_EXIT_XEN = T.point("vcpu.exit.xen", "input={input} longmode={longmode} cpl={cpl}")
TP_VCPU_EXIT_IOAPIC_EOI = T.point("vcpu.exit.ioapic_eoi", "vector={vector:#x}")
TP_VCPU_COALESCED = T.point("vcpu.coalesced", "port={port:#x} size={size} value={value:#x} dev={dev} (no exit: replayed "
                            "from KVM's coalesced ring)")
TP_VCPU_EXIT_OTHER = T.point("vcpu.exit.other", "reason={reason}")
TP_VCPU_STATE = T.point("vcpu.state", "{state}")

# vmm/vm.py
TP_VM_EXIT = T.point("vm.exit", "code={code} reason={reason}")
TP_VM_COALESCED_ZONE = T.point("vm.coalesced_zone", "{what} port={port:#x} coalesced={on}")

# vmm/boot/loader.py
TP_BOOT_LOAD = T.point("boot.load", "protocol={protocol} kernel={path} entry={entry:#x} {detail}")

# vmm/irqchip.py: the interrupt path (a line changed, the diverter's answer, MSIs, EOIs)
TP_IRQ_GSI = T.point("irq.gsi", "gsi={gsi} level={level} source={source}")
TP_IRQ_DIVERT = T.point("irq.divert", "{what} diverted={diverted}")
TP_IRQ_MSI = T.point("irq.msi", "addr={addr:#x} data={data:#x} delivered={delivered}")
TP_IRQ_MSI_VECTOR = T.point("irq.msi_vector", "{owner} {kind}[{index}] addr={addr:#x} data={data:#x} masked={masked} "
                                              "irqfd={irqfd}")
TP_IRQ_EOI = T.point("irq.eoi", "vector={vector:#x}")

# vmm/extint.py: a userspace PIC's vector injected as ExtINT (KVM_INTERRUPT)
TP_IRQ_EXTINT = T.point("irq.extint", "vector={vector:#x}")

# vmm/snapshot.py: a section written or read (and checked); vmm/machine.py: each step of a
# snapshot or a restore (pause, save, load, rebuild of a subsystem, resume); vmm/api.py: a request
TP_SNAPSHOT_SECTION = T.point("snapshot.section", "dir={dir} name={name} bytes={bytes} crc={crc}")
TP_SNAPSHOT_STEP = T.point("snapshot.step", "{op} {step} {detail}")
TP_API_REQUEST = T.point("api.request", "cmd={cmd} ok={ok} {detail}")

# vmm/errors.py
TP_VMM_INTERNAL_ERROR = T.point("vmm.internal_error", "where={where} error={error}")
