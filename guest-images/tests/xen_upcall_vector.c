/*
 * xen_upcall_vector: event delivery through the per-vCPU upcall vector
 * (HVMOP_set_evtchn_upcall_vector), as modern Linux uses it.
 *
 * Xen (xen/arch/x86/hvm/irq.c hvm_assert_evtchn_irq): with a per-vCPU vector
 * set, an event raises that vector in the vCPU's LAPIC (vlapic_set_irq, a
 * fixed interrupt: TPR-masked, EOI'd by the guest), and nothing else - in
 * particular not a CALLBACK_IRQ GSI, which Linux also programs (GSI 1, "to
 * trick the toolstack").  HVMOP_set_evtchn_upcall_vector itself raises the
 * vector once (hvm.c).  evtchn_upcall_mask is ignored for HVM.
 */
#include "xen.h"

#define GSI1_VECTOR 0xf4
static volatile int gsi1_hits;

static void gsi1_isr(struct kit_frame *f)
{
	(void)f;
	gsi1_hits++;
	lapic_eoi();
}

void kit_main(void)
{
	printf("xen_upcall_vector: per-vCPU upcall vector 0xf3, CALLBACK_IRQ=GSI 1 ignored\n");
	xen_test_start("xen_upcall_vector");
	volatile struct vcpu_info *vi = xen_vcpu_info();
	pic_mask_all();
	kit_set_handler(GSI1_VECTOR, gsi1_isr);
	ioapic_route(1, GSI1_VECTOR, true, false, lapic_id(), false);

	XEN_EXPECT("set_evtchn_upcall_vector(vcpu 0, 0x0f)", xen_set_upcall_vector(0, 0x0f), -XEN_EINVAL);

	/* As Linux boots: an event pending, the vector set with the LAPIC disabled. */
	evtchn_port_t early;
	XEN_EXPECT("bind_ipi(0) before the vector", xen_evtchn_bind_ipi(0, &early), 0);
	lapic_write(APIC_SVR, 0xff);			/* software-disabled (SVR bit 8 clear) */
	XEN_EXPECT("send(ipi) with no callback yet", xen_evtchn_send(early), 0);
	kit_set_handler(XEN_KIT_UPCALL_VECTOR, xen_upcall_isr_eoi);
	XEN_EXPECT("set_evtchn_upcall_vector with the LAPIC disabled",
		   xen_set_upcall_vector(xen_vcpu_id(), XEN_KIT_UPCALL_VECTOR), 0);
	xen_spin_until(xen_now() + XEN_MS(20));
	XEN_CHECK(xen_evtchn_count[early] == 0, "upcall taken while the LAPIC was disabled\n");
	lapic_enable();
	XEN_CHECK(XEN_WAIT_UNTIL(xen_evtchn_count[early] >= 1, xen_now() + XEN_MS(500)),
		  "the vector raised while the LAPIC was disabled never arrived once enabled\n");
	printf("xen_upcall_vector: vector set with the LAPIC disabled, taken once enabled ok\n");

	xen_use_upcall_vector();
	printf("xen_upcall_vector: set_evtchn_upcall_vector(0, 0xf3) = 0 ok\n");
	XEN_EXPECT("set_param(CALLBACK_IRQ, GSI 1)", xen_hvm_set_param(HVM_PARAM_CALLBACK_IRQ, HVM_CALLBACK_GSI(1)), 0);

	evtchn_port_t p;
	XEN_EXPECT("bind_ipi(0)", xen_evtchn_bind_ipi(0, &p), 0);
	for (uint32_t i = 1; i <= 3; i++) {
		XEN_EXPECT("send(ipi)", xen_evtchn_send(p), 0);
		if (!XEN_WAIT_UNTIL(xen_evtchn_count[p] >= i, xen_now() + XEN_MS(500)))
			kit_fail("xen_upcall_vector: event %u not delivered on vector 0xf3", i);
	}
	printf("xen_upcall_vector: 3 events, 3 deliveries on 0xf3 (each EOI'd) ok\n");

	/* TPR 0xf0 holds vector 0xf3 back: it is a LAPIC fixed interrupt. */
	cli();
	lapic_write(APIC_TPR, 0xf0);
	uint32_t n = xen_evtchn_count[p];
	XEN_EXPECT("send(ipi) with TPR 0xf0", xen_evtchn_send(p), 0);
	sti();
	xen_spin_until(xen_now() + XEN_MS(10));
	XEN_CHECK(xen_evtchn_count[p] == n, "vector 0xf3 delivered through TPR 0xf0\n");
	XEN_CHECK(xen_evtchn_pending(p) && vi->evtchn_upcall_pending, "event lost while held back\n");
	lapic_write(APIC_TPR, 0);
	XEN_CHECK(XEN_WAIT_UNTIL(xen_evtchn_count[p] > n, xen_now() + XEN_MS(500)), "not delivered after TPR 0\n");
	printf("xen_upcall_vector: TPR 0xf0 held the upcall back, TPR 0 let it in ok\n");

	/* evtchn_upcall_mask is not used for HVM guests. */
	vi->evtchn_upcall_mask = 1;
	n = xen_evtchn_count[p];
	XEN_EXPECT("send(ipi) with evtchn_upcall_mask 1", xen_evtchn_send(p), 0);
	XEN_CHECK(XEN_WAIT_UNTIL(xen_evtchn_count[p] > n, xen_now() + XEN_MS(500)),
		  "evtchn_upcall_mask blocked an HVM upcall\n");
	vi->evtchn_upcall_mask = 0;
	printf("xen_upcall_vector: evtchn_upcall_mask ignored (HVM) ok\n");

	/* A masked port: pending, no upcall; EVTCHNOP_unmask delivers it. */
	xen_evtchn_mask(p);
	n = xen_evtchn_count[p];
	XEN_EXPECT("send(masked ipi)", xen_evtchn_send(p), 0);
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(10));
	XEN_CHECK(xen_evtchn_count[p] == n && xen_evtchn_pending(p), "masked port: count %u pending %d\n",
		  xen_evtchn_count[p], xen_evtchn_pending(p));
	XEN_EXPECT("unmask(ipi)", xen_evtchn_unmask(p), 0);
	XEN_CHECK(XEN_WAIT_UNTIL(xen_evtchn_count[p] > n, xen_now() + XEN_MS(500)), "unmask did not deliver\n");
	printf("xen_upcall_vector: masked port held, unmask delivered on 0xf3 ok\n");

	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(10));
	XEN_EXPECT("interrupts on the CALLBACK_IRQ GSI 1", gsi1_hits, 0);
	unsigned cpu = lapic_id();
	printf("xen_upcall_vector: %u upcalls, %u spurious, %u ports\n", xen_upcall_stats[cpu].calls,
	       xen_upcall_stats[cpu].spurious, xen_upcall_stats[cpu].ports);
	xen_pass();
}
