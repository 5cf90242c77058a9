/*
 * xen_snapshot: Xen state that a snapshot must carry (port transport): a periodic
 * VIRQ_TIMER, an IPI sent and received once per tick, a port left pending but masked, and a
 * level GSI PIRQ (GSI 20 from the testdev, held high, not EOI'd).  It prints
 * "tick=N ipi=M" every 20 ticks until ticks=N (cmdline, default 400); then checks every
 * event arrived exactly once: each IPI once, the masked port not at all until unmasked
 * and then once, the PIRQ once, and once more at its EOI (the line is still high).
 */
#include "xen.h"

void kit_main(void)
{
	evtchn_port_t tp, ip, mp, pp;
	int pirq = -1;
	uint32_t sent = 0, printed = 0, last;

	printf("xen_snapshot: boot\n");
	xen_test_start("xen_snapshot");
	xen_use_upcall_vector();
	last = (uint32_t)xen_cmdline_u64("ticks", 400);

	XEN_EXPECT("bind_virq(TIMER)", xen_evtchn_bind_virq(VIRQ_TIMER, 0, &tp), 0);
	XEN_EXPECT("bind_ipi", xen_evtchn_bind_ipi(0, &ip), 0);
	XEN_EXPECT("bind_ipi (masked)", xen_evtchn_bind_ipi(0, &mp), 0);
	xen_evtchn_mask(mp);
	XEN_EXPECT("send (masked)", xen_evtchn_send(mp), 0);
	XEN_EXPECT("map_pirq(GSI 20)", xen_map_pirq_gsi(20, &pirq), 0);
	XEN_EXPECT("bind_pirq", xen_bind_pirq((uint32_t)pirq, 0, &pp), 0);
	testdev_set_gsi(20, 1);			/* level, held high: one event until the EOI */
	if (!XEN_WAIT_UNTIL(xen_evtchn_count[pp] == 1, xen_now() + XEN_MS(1000)))
		kit_fail("xen_snapshot: no PIRQ event");

	struct vcpu_set_periodic_timer per = { .period_ns = XEN_MS(10) };
	XEN_EXPECT("set_periodic_timer(10 ms)", HYPERVISOR_vcpu_op(VCPUOP_set_periodic_timer, 0, &per), 0);
	while (printed < last) {
		uint32_t t = xen_evtchn_count[tp];
		if (t > sent) {			/* one IPI per tick seen, answered before the next */
			long r = xen_evtchn_send(ip);
			if (r)
				kit_fail("xen_snapshot: send = %ld", r);
			sent++;
			if (!XEN_WAIT_UNTIL(xen_evtchn_count[ip] == sent, xen_now() + XEN_MS(2000)))
				kit_fail("xen_snapshot: IPI %u never arrived (%u)", sent, xen_evtchn_count[ip]);
		}
		if (t >= printed + 20) {
			printed = t - t % 20;
			printf("tick=%u ipi=%u\n", printed, xen_evtchn_count[ip]);
		}
		XEN_WAIT_UNTIL(xen_evtchn_count[tp] != t, xen_now() + XEN_MS(100));
	}
	HYPERVISOR_vcpu_op(VCPUOP_stop_periodic_timer, 0, NULL);
	if (xen_evtchn_count[ip] != sent)
		kit_fail("xen_snapshot: %u IPIs sent, %u received", sent, xen_evtchn_count[ip]);
	if (xen_evtchn_count[mp] != 0 || !xen_evtchn_pending(mp))
		kit_fail("xen_snapshot: masked port: count %u pending %d", xen_evtchn_count[mp], xen_evtchn_pending(mp));
	XEN_EXPECT("unmask", xen_evtchn_unmask(mp), 0);
	if (!XEN_WAIT_UNTIL(xen_evtchn_count[mp] == 1, xen_now() + XEN_MS(1000)))
		kit_fail("xen_snapshot: unmasked port never arrived");
	if (xen_evtchn_count[pp] != 1)
		kit_fail("xen_snapshot: PIRQ arrived %u times before its EOI", xen_evtchn_count[pp]);
	XEN_EXPECT("eoi (line still high)", xen_pirq_eoi((uint32_t)pirq), 0);
	if (!XEN_WAIT_UNTIL(xen_evtchn_count[pp] == 2, xen_now() + XEN_MS(1000)))
		kit_fail("xen_snapshot: the level PIRQ did not re-assert at its EOI (%u)", xen_evtchn_count[pp]);
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(50));
	if (xen_evtchn_count[mp] != 1 || xen_evtchn_count[pp] != 2 || xen_evtchn_count[ip] != sent)
		kit_fail("xen_snapshot: late duplicates");
	printf("xen_snapshot: %u ticks, %u IPIs, each event once\n", printed, sent);
	kit_pass();
}
