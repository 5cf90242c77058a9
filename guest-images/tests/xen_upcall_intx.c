/*
 * xen_upcall_intx: event delivery through the Xen platform PCI device's INTx
 * line, HVM_PARAM_CALLBACK_IRQ = PCI_INTX (type 1, encoded as Linux's
 * platform-pci get_callback_via(): domain 47:32, bus 31:16, devfn 15:8,
 * pin-1 1:0).  The device (5853:0001) is found by scanning bus 0 through
 * 0xCF8/0xCFC; its INTx GSI is its config-space interrupt line, routed as a
 * PCI interrupt (level-triggered, active low) to vector 0x61.  The line
 * follows vCPU 0's evtchn_upcall_pending (xen/arch/x86/hvm/irq.c
 * hvm_set_callback_irq_level, case HVMIRQ_callback_pci_intx).
 */
#include "xen.h"

#define XEN_PLATFORM_VENDOR 0x5853
#define XEN_PLATFORM_DEVICE 0x0001

void kit_main(void)
{
	printf("xen_upcall_intx: HVM_PARAM_CALLBACK_IRQ = Xen platform device INTx\n");
	xen_test_start("xen_upcall_intx");
	int slot;

	for (slot = 0; slot < 32; slot++)
		if (pci_cfg_read32(0, slot, 0, 0) == (XEN_PLATFORM_DEVICE << 16 | XEN_PLATFORM_VENDOR))
			break;
	if (slot == 32)
		kit_fail("xen_upcall_intx: no Xen platform PCI device (5853:0001) on bus 0");
	uint32_t class_rev = pci_cfg_read32(0, slot, 0, 0x08);
	uint32_t intr = pci_cfg_read32(0, slot, 0, 0x3c);
	unsigned line = intr & 0xff, pin = (intr >> 8) & 0xff;
	printf("xen_upcall_intx: platform device at 00:%02x.0 class %#x rev %u, INT%c, line %u\n",
	       slot, class_rev >> 16, class_rev & 0xff, 'A' + pin - 1, line);
	XEN_CHECK(pin >= 1 && pin <= 4, "interrupt pin %u\n", pin);
	XEN_CHECK(line > 0 && line < 24, "interrupt line %u is not an I/O APIC GSI\n", line);
	printf("xen_upcall_intx: platform port 0x10 reads %#x (0x49d2 = unplug protocol)\n", inw(0x10));

	xen_check_level_callback(line, 0x61, true, HVM_CALLBACK_PCI_INTX(0, 0, slot << 3, pin));
	xen_pass();
}
