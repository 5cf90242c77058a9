/*
 * xen_upcall_gsi: event delivery through a GSI, HVM_PARAM_CALLBACK_IRQ =
 * GSI (type 0; Linux's platform-pci driver uses this when its IRQ is < 16).
 * The GSI is asserted while vCPU 0's evtchn_upcall_pending is set and
 * dropped once the guest clears it (xen/arch/x86/hvm/irq.c
 * hvm_set_callback_irq_level, hvm_maybe_deassert_evtchn_irq).  Routed
 * level-triggered, active high (an ISA-style line) to vector 0x60.
 * cmdline "gsi=N" picks the GSI (default 5, unused on the kit board).
 */
#include "xen.h"

void kit_main(void)
{
	printf("xen_upcall_gsi: HVM_PARAM_CALLBACK_IRQ = GSI, level-triggered\n");
	xen_test_start("xen_upcall_gsi");
	unsigned gsi = (unsigned)xen_cmdline_u64("gsi", 5);
	XEN_CHECK(gsi > 0 && gsi < 24, "gsi=%u\n", gsi);
	printf("xen_upcall_gsi: callback GSI %u -> vector 0x60\n", gsi);
	xen_check_level_callback(gsi, 0x60, false, HVM_CALLBACK_GSI(gsi));
	xen_pass();
}
