"""Every trace point of devices/, declared once (QEMU's trace-events file).

Modules take their points from here, as module-level objects whose ``enabled`` is a
plain attribute (a disabled point costs one attribute load and a branch), e.g.
``from devices.trace_events import TP_SERIAL_TX as TP_TX``.  A constant is ``TP_`` and the point's
name in capitals.  ``vmm trace-points`` lists every point with its fields;
tests/test_trace_points.py fails on a point declared here and emitted nowhere, on an
emit of a point declared nowhere, and on ARCHITECTURE.md's list disagreeing.
"""

from __future__ import annotations

from vmm.trace import TraceTable

T = TraceTable("devices")

# devices/serial.py
TP_SERIAL_TX = T.point("serial.tx", "byte={byte:#04x}")
TP_SERIAL_RX = T.point("serial.rx", "bytes={n} queued={queued}")
TP_SERIAL_IRQ = T.point("serial.irq", "level={level} iir={iir:#x}")
TP_SERIAL_REG = T.point("serial.reg", "{dir} reg={reg} value={value:#x}")

# devices/rtc.py
TP_RTC_WRITE = T.point("rtc.write", "reg={reg:#x} value={value:#x}")

# devices/pit.py
TP_PIT_CONTROL = T.point("pit.control", "value={value:#04x}")
TP_PIT_COUNT = T.point("pit.count", "ch={ch} count={count} mode={mode}")
TP_PIT_IRQ = T.point("pit.irq", "edges={edges}")
TP_PIT_TIMER = T.point("pit.timer", "{event} mode={mode} count={count}")
TP_PORT61_WRITE = T.point("port61.write", "value={value:#04x}")

# devices/pic.py
TP_PIC_WRITE = T.point("pic.write", "chip={chip} port={port} value={value:#04x}")
TP_PIC_ACK = T.point("pic.ack", "irq={irq} vector={vector:#x}")
TP_PIC_EOI = T.point("pic.eoi", "gsi={gsi}")

# devices/legacy.py
TP_I8042_RESET = T.point("i8042.reset", "value={value:#x}")
TP_DEBUG_EXIT_WRITE = T.point("debug_exit.write", "value={value:#x}")
TP_TESTDEV_MSI = T.point("testdev.msi", "addr={addr:#x} data={data:#x} delivered={ok}")
TP_TESTDEV_GSI = T.point("testdev.gsi", "gsi={gsi} level={level}")
TP_PVPANIC_WRITE = T.point("pvpanic.write", "value={value:#x}")

# devices/acpi_pm.py
TP_ACPI_SLEEP = T.point("acpi.sleep", "value={value:#x} slp_typ={slp_typ} slp_en={slp_en} action={action}")
TP_ACPI_RESET = T.point("acpi.reset", "value={value:#x} action={action}")
TP_ACPI_SCI = T.point("acpi.sci", "level={level} sts={sts:#x} en={en:#x}")

# devices/ioapic.py
TP_IOAPIC_RTE = T.point("ioapic.rte", "pin={pin} vector={vector:#x} mode={mode} dest={dest} level={level} "
                                      "masked={masked}")
TP_IOAPIC_DELIVER = T.point("ioapic.deliver", "pin={pin} vector={vector:#x} dest={dest}")
TP_IOAPIC_EOI = T.point("ioapic.eoi", "vector={vector:#x} pins={pins}")

# devices/pci.py (a refused BAR is a pci.bar.map with result=refused: ...)
TP_PCI_CONFIG_READ = T.point("pci.config.read", "bdf={bdf} offset={offset:#04x} size={size} value={value:#x}")
TP_PCI_CONFIG_WRITE = T.point("pci.config.write", "bdf={bdf} offset={offset:#04x} size={size} value={value:#x}")
TP_PCI_BAR_MAP = T.point("pci.bar.map", "bdf={bdf} bar={bar} kind={kind} addr={addr:#x} size={size:#x} "
                                        "result={result}")
TP_PCI_BAR_UNMAP = T.point("pci.bar.unmap", "bdf={bdf} bar={bar} kind={kind} addr={addr:#x} size={size:#x}")
TP_PCI_INTX = T.point("pci.intx", "bdf={bdf} pin={pin} gsi={gsi} level={level} line={line}")
TP_PCI_ROUTE = T.point("pci.route", "{reg} value={value:#x} targets={targets}")

# devices/msi.py
TP_PCI_MSI_CONFIG = T.point("pci.msi.config", "bdf={bdf} enable={enable} count={count} addr={addr:#x} data={data:#x} "
                                              "mask={mask:#x} pending={pending:#x}")
TP_PCI_MSI_FIRE = T.point("pci.msi.fire", "bdf={bdf} vector={vector} result={result}")
TP_PCI_MSIX_ENTRY = T.point("pci.msix.entry", "bdf={bdf} entry={entry} addr={addr:#x} data={data:#x} masked={masked}")
TP_PCI_MSIX_CTRL = T.point("pci.msix.ctrl", "bdf={bdf} enable={enable} function_mask={function_mask}")
TP_PCI_MSIX_FIRE = T.point("pci.msix.fire", "bdf={bdf} entry={entry} result={result}")

# devices/pci_testdev.py
TP_PCI_TESTDEV_INTX = T.point("pci_testdev.intx", "level={level} output={output}")
TP_PCI_TESTDEV_FIRE = T.point("pci_testdev.fire", "kind={kind} index={index} count={count} via={via}")
TP_PCI_TESTDEV_TIMER = T.point("pci_testdev.timer", "{event} kind={kind} index={index} count={count} "
                                                    "period_us={period_us}")

# devices/virtio/ (owner: the function's bdf; the virtqueue life cycle of §2.7 and §4.1)
TP_VIRTIO_STATUS = T.point("virtio.status", "owner={owner} dev={dev} status={old:#x}->{new:#x}")
TP_VIRTIO_FEATURES = T.point("virtio.features", "owner={owner} dev={dev} offered={offered:#x} "
                                                "driver={driver:#x} result={result}")
TP_VIRTIO_RESET = T.point("virtio.reset", "owner={owner} dev={dev} what={what}")
TP_VIRTIO_QUEUE_ENABLE = T.point("virtio.queue.enable", "owner={owner} queue={queue} size={size} desc={desc:#x} "
                                                        "driver={driver:#x} device={device:#x} vector={vector:#x}")
TP_VIRTIO_NOTIFY = T.point("virtio.notify", "owner={owner} queue={queue} via={via}")
TP_VIRTIO_IOEVENTFD = T.point("virtio.ioeventfd", "owner={owner} queue={queue} addr={addr:#x} result={result}")
TP_VIRTIO_QUEUE_POP = T.point("virtio.queue.pop", "owner={owner} queue={queue} head={head} ndesc={ndesc} "
                                                  "out={outlen} in={inlen} last_avail={last_avail}")
TP_VIRTIO_QUEUE_PUSH = T.point("virtio.queue.push", "owner={owner} queue={queue} head={head} len={len} used={used}")
TP_VIRTIO_IRQ = T.point("virtio.irq", "owner={owner} cause={cause} via={via} vector={vector:#x} result={result}")
TP_VIRTIO_BROKEN = T.point("virtio.broken", "owner={owner} dev={dev} reason={reason}")
TP_VIRTIO_BLK_REQ = T.point("virtio_blk.req", "owner={owner} type={type} sector={sector} len={len} status={status}")
TP_VIRTIO_NET_RX = T.point("virtio_net.rx", "owner={owner} len={len} bufs={bufs} result={result}")
TP_VIRTIO_NET_TX = T.point("virtio_net.tx", "owner={owner} len={len} result={result}")
TP_VIRTIO_NET_RX_PAUSE = T.point("virtio_net.rx_pause", "owner={owner} state={state} reason={reason}")
