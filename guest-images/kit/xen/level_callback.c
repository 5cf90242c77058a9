/*
 * xen_check_level_callback(): event delivery through a GSI or PCI INTx line
 * (HVM_PARAM_CALLBACK_IRQ types 0 and 1), shared by xen_upcall_gsi and
 * xen_upcall_intx.
 *
 * Xen (xen/arch/x86/hvm/irq.c): hvm_assert_evtchn_irq() on vCPU 0 ->
 * hvm_set_callback_irq_level(): the line is asserted while vCPU 0's
 * evtchn_upcall_pending is set ("NB. Do not check the evtchn_upcall_mask");
 * hvm_maybe_deassert_evtchn_irq() drops it at the next exit after the guest
 * cleared upcall_pending (vmx.c/svm.c call it on every VM exit), so a
 * handler that clears upcall_pending before its EOI sees no re-delivery,
 * and one that leaves it set gets the level interrupt again after the EOI.
 */
#include "xen.h"

static volatile int calls, real, spurious, leave;

static void level_isr(struct kit_frame *f)
{
	(void)f;
	calls++;
	if (!xen_vcpu_info()->evtchn_upcall_pending) {
		spurious++;		/* e.g. the PVM host's duplicate of a level line */
		lapic_eoi();
		return;
	}
	real++;
	if (leave) {			/* EOI with upcall_pending still set: line stays high */
		leave--;
		lapic_eoi();
		return;
	}
	xen_upcall();			/* clears evtchn_upcall_pending first */
	lapic_eoi();
}

void xen_check_level_callback(unsigned gsi, uint8_t vector, bool active_low, uint64_t callback)
{
	const char *name = xen_test_name;
	volatile struct vcpu_info *vi = xen_vcpu_info();
	uint64_t v;

	pic_mask_all();
	kit_set_handler(vector, level_isr);
	ioapic_route(gsi, vector, true, active_low, lapic_id(), false);
	XEN_EXPECT("set_param(CALLBACK_IRQ)", xen_hvm_set_param(HVM_PARAM_CALLBACK_IRQ, callback), 0);
	XEN_EXPECT("get_param(CALLBACK_IRQ)", xen_hvm_get_param(HVM_PARAM_CALLBACK_IRQ, &v), 0);
	XEN_CHECK(v == callback, "CALLBACK_IRQ reads %#lx, want %#lx\n", v, callback);
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(5));
	XEN_CHECK(calls == 0, "%d interrupts on GSI %u before any event\n", calls, gsi);

	evtchn_port_t p;
	XEN_EXPECT("bind_ipi(0)", xen_evtchn_bind_ipi(0, &p), 0);

	/* One event, one delivery; the line drops once upcall_pending is cleared. */
	for (int i = 1; i <= 3; i++) {
		uint32_t n = xen_evtchn_count[p];
		int r0 = real;
		XEN_EXPECT("send(ipi)", xen_evtchn_send(p), 0);
		if (!XEN_WAIT_UNTIL(xen_evtchn_count[p] > n, xen_now() + XEN_MS(500)))
			kit_fail("%s: event %d not delivered on GSI %u (vector %#x)", name, i, gsi, vector);
		XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(10));
		int c1 = calls;
		XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(20));
		XEN_CHECK(real - r0 == 1 && xen_evtchn_count[p] == n + 1, "event %d: %d real entries\n", i, real - r0);
		XEN_CHECK(calls == c1, "GSI %u still interrupting after upcall_pending was cleared\n", gsi);
	}
	/* One spurious entry per event is the PVM host's LAPIC (see the file comment); a
	 * second one means the line was still high when the I/O APIC saw the EOI. */
	XEN_CHECK(spurious <= 2 * real, "%d spurious entries for %d events\n", spurious, real);
	printf("%s: 3 events -> 3 interrupts on GSI %u, line dropped after each (spurious %d) ok\n",
	       name, gsi, spurious);

	/* The singleshot timer's VIRQ_TIMER comes through the line too (where KVM could run
	 * the timer, it raises only vector upcalls: the VMM must keep this one). */
	evtchn_port_t tp;
	XEN_EXPECT("bind_virq(TIMER, 0)", xen_evtchn_bind_virq(VIRQ_TIMER, 0, &tp), 0);
	uint32_t tn = xen_evtchn_count[tp];
	uint64_t dl = xen_now() + XEN_MS(20);
	XEN_EXPECT("set_singleshot_timer(+20 ms)", xen_set_singleshot(dl, 0), 0);
	if (!XEN_WAIT_UNTIL(xen_evtchn_count[tp] > tn, dl + XEN_MS(2000)))
		kit_fail("%s: VIRQ_TIMER not delivered on GSI %u", name, gsi);
	XEN_EXPECT("close(timer port)", xen_evtchn_close(tp), 0);
	printf("%s: VIRQ_TIMER delivered on GSI %u ok\n", name, gsi);

	/* Level: EOI without clearing upcall_pending -> the same line interrupts again. */
	leave = 1;
	int r0 = real;
	uint32_t n = xen_evtchn_count[p];
	XEN_EXPECT("send(ipi), first EOI leaves upcall_pending set", xen_evtchn_send(p), 0);
	XEN_CHECK(XEN_WAIT_UNTIL(xen_evtchn_count[p] > n, xen_now() + XEN_MS(500)), "not handled\n");
	XEN_CHECK(real - r0 >= 2, "line not re-delivered while upcall_pending stayed set (%d entries)\n", real - r0);
	printf("%s: level line re-delivered while upcall_pending stayed set (%d entries) ok\n", name, real - r0);

	/* A masked I/O APIC pin holds the asserted line; unmasking delivers it. */
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(5));
	ioapic_route(gsi, vector, true, active_low, lapic_id(), true);
	int c0 = calls;
	n = xen_evtchn_count[p];
	XEN_EXPECT("send(ipi), pin masked", xen_evtchn_send(p), 0);
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(10));
	XEN_CHECK(calls == c0 && vi->evtchn_upcall_pending, "masked pin: %d entries, upcall_pending %u\n",
		  calls - c0, vi->evtchn_upcall_pending);
	ioapic_route(gsi, vector, true, active_low, lapic_id(), false);
	XEN_CHECK(XEN_WAIT_UNTIL(xen_evtchn_count[p] > n, xen_now() + XEN_MS(500)),
		  "unmasking the pin did not deliver the asserted line\n");
	printf("%s: masked pin held the line, unmask delivered it ok\n", name);

	/* The per-vCPU upcall vector takes precedence over the GSI/INTx callback. */
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(5));
	xen_use_upcall_vector();
	c0 = calls;
	n = xen_evtchn_count[p];
	XEN_EXPECT("send(ipi) with a per-vCPU vector set", xen_evtchn_send(p), 0);
	XEN_CHECK(XEN_WAIT_UNTIL(xen_evtchn_count[p] > n, xen_now() + XEN_MS(500)), "not delivered on 0xf3\n");
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(10));
	XEN_CHECK(calls == c0, "GSI %u interrupted although a per-vCPU vector is set\n", gsi);
	printf("%s: per-vCPU vector 0xf3 takes precedence over the callback line ok\n", name);
}
