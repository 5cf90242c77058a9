/*
 * xen_upcall_callback_vector: event delivery through the domain-wide
 * callback vector, HVM_PARAM_CALLBACK_IRQ = (2 << 56) | vector (Linux with
 * XENFEAT_hvm_callback_vector but no per-vCPU vector).
 *
 * Xen (xen/arch/x86/hvm/irq.c hvm_vcpu_has_pending_irq): the vector is
 * injected directly - not through the LAPIC, so no EOI and no TPR masking
 * (hvm_interrupt_blocked checks TPR only for LAPIC sources) - for as long as
 * vcpu_info->evtchn_upcall_pending is set and RFLAGS.IF allows.  Turning the
 * parameter on re-asserts (hvm_set_callback_via -> hvm_assert_evtchn_irq).
 * KVM's KVM_XEN_ATTR_TYPE_UPCALL_VECTOR behaves the same (kvm_xen_has_interrupt).
 *
 * cmdline "tpr=0" skips the TPR check (only for a VMM that cannot inject a
 * non-LAPIC vector; Xen and KVM both pass it).
 */
#include "xen.h"

#define CB_VECTOR 0xf4
static volatile int raw_calls, leave_pending;

static void cb_isr(struct kit_frame *f)
{
	(void)f;
	raw_calls++;
	if (leave_pending) {		/* return without clearing evtchn_upcall_pending */
		leave_pending--;
		return;
	}
	xen_upcall();			/* no EOI: not a LAPIC interrupt */
}

void kit_main(void)
{
	printf("xen_upcall_callback_vector: HVM_PARAM_CALLBACK_IRQ vector 0xf4\n");
	xen_test_start("xen_upcall_callback_vector");
	volatile struct vcpu_info *vi = xen_vcpu_info();
	kit_set_handler(CB_VECTOR, cb_isr);

	XEN_EXPECT("set_param(CALLBACK_IRQ, vector 0xf4)",
		   xen_hvm_set_param(HVM_PARAM_CALLBACK_IRQ, HVM_CALLBACK_VECTOR(CB_VECTOR)), 0);
	evtchn_port_t p;
	XEN_EXPECT("bind_ipi(0)", xen_evtchn_bind_ipi(0, &p), 0);
	for (uint32_t i = 1; i <= 3; i++) {
		XEN_EXPECT("send(ipi)", xen_evtchn_send(p), 0);
		if (!XEN_WAIT_UNTIL(xen_evtchn_count[p] >= i, xen_now() + XEN_MS(500)))
			kit_fail("xen_upcall_callback_vector: event %u not delivered", i);
	}
	printf("xen_upcall_callback_vector: 3 events delivered without any EOI ok\n");

	/* No EOI was ever written: a lower-priority LAPIC interrupt still gets in. */
	uint32_t w = xen_wake_count;
	xen_arm_wake(xen_now() + XEN_MS(2));
	sti();
	xen_spin_until(xen_now() + XEN_MS(20));
	XEN_CHECK(xen_wake_count > w, "LAPIC timer 0xe0 blocked: is the callback vector stuck in the ISR?\n");
	printf("xen_upcall_callback_vector: LAPIC timer (0xe0) still delivered after un-EOI'd upcalls ok\n");

	/* Level-like: while evtchn_upcall_pending stays set, the vector comes back. */
	raw_calls = 0;
	leave_pending = 1;
	uint32_t n = xen_evtchn_count[p];
	XEN_EXPECT("send(ipi), handler leaves upcall_pending set once", xen_evtchn_send(p), 0);
	bool handled = XEN_WAIT_UNTIL(xen_evtchn_count[p] > n, xen_now() + XEN_MS(500));
	XEN_CHECK(handled && raw_calls >= 2, "vector taken %d times, want re-injection while upcall_pending\n",
		  raw_calls);
	if (!handled) {			/* keep_going: handle it ourselves so later checks see a clean state */
		leave_pending = 0;
		cli();
		xen_upcall();
		sti();
	}
	printf("xen_upcall_callback_vector: re-injected while evtchn_upcall_pending (%d entries) ok\n", raw_calls);

	/* Not masked by the TPR (not a LAPIC interrupt). */
	if (xen_cmdline_u64("tpr", 1)) {
		cli();
		lapic_write(APIC_TPR, 0xf0);
		n = xen_evtchn_count[p];
		XEN_EXPECT("send(ipi) with TPR 0xf0", xen_evtchn_send(p), 0);
		sti();
		xen_spin_until(xen_now() + XEN_MS(20));
		lapic_write(APIC_TPR, 0);
		XEN_CHECK(xen_evtchn_count[p] > n, "callback vector held back by TPR 0xf0\n");
		printf("xen_upcall_callback_vector: delivered with TPR 0xf0 (not a LAPIC vector) ok\n");
	}

	/* evtchn_upcall_mask is ignored for HVM. */
	vi->evtchn_upcall_mask = 1;
	n = xen_evtchn_count[p];
	XEN_EXPECT("send(ipi) with evtchn_upcall_mask 1", xen_evtchn_send(p), 0);
	XEN_CHECK(XEN_WAIT_UNTIL(xen_evtchn_count[p] > n, xen_now() + XEN_MS(500)), "upcall_mask blocked it\n");
	vi->evtchn_upcall_mask = 0;
	printf("xen_upcall_callback_vector: evtchn_upcall_mask ignored (HVM) ok\n");

	/* CALLBACK_IRQ = 0 stops delivery; setting it again delivers what is pending. */
	XEN_EXPECT("set_param(CALLBACK_IRQ, 0)", xen_hvm_set_param(HVM_PARAM_CALLBACK_IRQ, 0), 0);
	n = xen_evtchn_count[p];
	XEN_EXPECT("send(ipi) with no callback", xen_evtchn_send(p), 0);
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(10));
	XEN_CHECK(xen_evtchn_count[p] == n && vi->evtchn_upcall_pending && xen_evtchn_pending(p),
		  "no-callback event: count %u upcall_pending %u\n", xen_evtchn_count[p], vi->evtchn_upcall_pending);
	XEN_EXPECT("set_param(CALLBACK_IRQ, vector 0xf4) again",
		   xen_hvm_set_param(HVM_PARAM_CALLBACK_IRQ, HVM_CALLBACK_VECTOR(CB_VECTOR)), 0);
	XEN_CHECK(XEN_WAIT_UNTIL(xen_evtchn_count[p] > n, xen_now() + XEN_MS(500)),
		  "pending upcall not delivered when the callback came back\n");
	printf("xen_upcall_callback_vector: off -> held pending, on -> delivered ok\n");
	xen_pass();
}
