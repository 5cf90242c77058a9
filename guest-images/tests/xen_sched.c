/*
 * xen_sched: __HYPERVISOR_sched_op yield, block, poll and shutdown_code
 * (xen/common/sched/core.c do_sched_op, do_poll, vcpu_block_enable_events;
 * xen/common/domain.c domain_shutdown; xen/common/event_2l.c
 * evtchn_2l_set_pending -> evtchn_check_pollers).
 *
 * Ends with SCHEDOP_shutdown_code(reboot) + SCHEDOP_shutdown(poweroff): the
 * recorded code wins, so the VMM must exit with 80 (reboot), not 0.
 */
#include "xen.h"

#define SLACK XEN_MS(xen_cmdline_u64("slack_ms", 50))

static long poll_ports(evtchn_port_t *ports, uint32_t nr, uint64_t timeout)
{
	struct sched_poll p = { .ports = (uintptr_t)ports, .nr_ports = nr, .timeout = timeout };
	return HYPERVISOR_sched_op(SCHEDOP_poll, &p);
}

void kit_main(void)
{
	printf("xen_sched: yield, block, poll, shutdown_code (expect exit 80)\n");
	xen_test_start("xen_sched");
	xen_use_upcall_vector();
	volatile struct vcpu_info *vi = xen_vcpu_info();

	XEN_EXPECT("SCHEDOP_yield", HYPERVISOR_sched_op(SCHEDOP_yield, NULL), 0);

	evtchn_port_t tp, idle, ipi;
	XEN_EXPECT("bind_virq(TIMER, 0)", xen_evtchn_bind_virq(VIRQ_TIMER, 0, &tp), 0);
	XEN_EXPECT("stop_periodic_timer(0)", HYPERVISOR_vcpu_op(VCPUOP_stop_periodic_timer, 0, NULL), 0);
	XEN_EXPECT("alloc_unbound (idle port)", xen_evtchn_alloc_unbound(DOMID_SELF, &idle), 0);
	XEN_EXPECT("bind_ipi(0)", xen_evtchn_bind_ipi(0, &ipi), 0);

	/* SCHEDOP_block returns when an event arrives (here the singleshot timer), IF=0 throughout. */
	cli();
	uint64_t dl = xen_now() + XEN_MS(10);
	XEN_EXPECT("set_singleshot_timer(+10 ms)", xen_set_singleshot(dl, 0), 0);
	XEN_EXPECT("SCHEDOP_block", HYPERVISOR_sched_op(SCHEDOP_block, NULL), 0);
	uint64_t t = xen_now();
	XEN_CHECK(t >= dl && t < dl + SLACK, "block returned at %ld us from the deadline\n",
		  (long)(t - dl) / 1000);
	XEN_CHECK(xen_evtchn_pending(tp) && vi->evtchn_upcall_pending, "timer port not pending after block\n");
	uint32_t n = xen_evtchn_count[tp];
	XEN_CHECK(XEN_WAIT_UNTIL(xen_evtchn_count[tp] > n, xen_now() + XEN_MS(500)), "no upcall after sti\n");
	printf("xen_sched: block woke %ld us after the timer deadline, upcall after sti ok\n",
	       (long)(t - dl) / 1000);

	/* SCHEDOP_block turns event delivery on first (vcpu_block_enable_events). */
	cli();
	vi->evtchn_upcall_mask = 1;
	dl = xen_now() + XEN_MS(10);
	XEN_EXPECT("set_singleshot_timer(+10 ms)", xen_set_singleshot(dl, 0), 0);
	XEN_EXPECT("SCHEDOP_block (upcall_mask set)", HYPERVISOR_sched_op(SCHEDOP_block, NULL), 0);
	XEN_CHECK(xen_now() >= dl && vi->evtchn_upcall_mask == 0, "block: upcall_mask %u after it\n",
		  vi->evtchn_upcall_mask);
	n = xen_evtchn_count[tp];
	XEN_CHECK(XEN_WAIT_UNTIL(xen_evtchn_count[tp] > n, xen_now() + XEN_MS(500)), "no upcall after sti\n");
	printf("xen_sched: block cleared upcall_mask ok\n");

	/* poll on no ports: the timer's upcall (a kick, IF=0 or not) ends it.  The timer is
	 * armed SLACK ahead so that it fires while we poll even on a slow host (on Xen too, an
	 * upcall raised before the poll with IF=0 would not end it); the 10 s poll timeout only
	 * turns a missing kick into a failure instead of a hang. */
	cli();
	dl = xen_now() + SLACK;
	XEN_EXPECT("set_singleshot_timer(+slack)", xen_set_singleshot(dl, 0), 0);
	XEN_EXPECT("poll([], +10 s)", poll_ports(NULL, 0, dl + XEN_MS(10000)), 0);
	t = xen_now();
	XEN_CHECK(t >= dl && t < dl + SLACK, "empty poll returned at %ld us from the timer deadline\n",
		  (long)(t - dl) / 1000);
	n = xen_evtchn_count[tp];
	XEN_CHECK(XEN_WAIT_UNTIL(xen_evtchn_count[tp] > n, xen_now() + XEN_MS(500)), "no upcall after sti\n");
	printf("xen_sched: an empty poll ended by the timer's upcall ok\n");

	/* poll: a pending port returns at once. */
	cli();
	xen_evtchn_mask(ipi);
	XEN_EXPECT("send(ipi, masked)", xen_evtchn_send(ipi), 0);
	XEN_CHECK(xen_evtchn_pending(ipi), "masked IPI port not pending\n");
	t = xen_now();
	XEN_EXPECT("poll([pending ipi], 1 s)", poll_ports(&ipi, 1, t + XEN_MS(1000)), 0);
	XEN_CHECK(xen_now() - t < XEN_MS(500), "poll on a pending port waited %lu us\n", (xen_now() - t) / 1000);
	xen_evtchn_clear_pending(ipi);

	/* poll: timeout (absolute system time). */
	t = xen_now();
	XEN_EXPECT("poll([idle], +20 ms)", poll_ports(&idle, 1, t + XEN_MS(20)), 0);
	uint64_t el = xen_now() - t;
	XEN_CHECK(el >= XEN_MS(20) && el < XEN_MS(20) + SLACK, "timeout poll took %lu us\n", el / 1000);
	printf("xen_sched: poll timed out after %lu us ok\n", el / 1000);
	t = xen_now();
	XEN_EXPECT("poll([idle], timeout in the past)", poll_ports(&idle, 1, t - XEN_MS(1)), 0);
	XEN_CHECK(xen_now() - t < SLACK, "past-timeout poll took %lu us\n", (xen_now() - t) / 1000);

	/* poll: a masked port woken by its event (the timer), no upcall. */
	xen_evtchn_mask(tp);
	n = xen_evtchn_count[tp];
	t = xen_now();
	dl = t + XEN_MS(10);
	XEN_EXPECT("set_singleshot_timer(+10 ms)", xen_set_singleshot(dl, 0), 0);
	XEN_EXPECT("poll([masked timer port], +2 s)", poll_ports(&tp, 1, t + XEN_MS(2000)), 0);
	uint64_t woke = xen_now();
	XEN_CHECK(woke >= dl && woke < dl + SLACK, "poll woke at %ld us from the timer deadline\n",
		  (long)(woke - dl) / 1000);
	XEN_CHECK(xen_evtchn_pending(tp), "timer port not pending\n");
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(5));
	XEN_CHECK(xen_evtchn_count[tp] == n, "masked port delivered an upcall\n");
	printf("xen_sched: poll on a masked port woke %ld us after its event, no upcall ok\n",
	       (long)(woke - dl) / 1000);
	xen_evtchn_clear_pending(tp);

	/* poll on two ports wakes for either. */
	cli();
	evtchn_port_t two[2] = { idle, tp };
	t = xen_now();
	dl = t + XEN_MS(10);
	XEN_EXPECT("set_singleshot_timer(+10 ms)", xen_set_singleshot(dl, 0), 0);
	XEN_EXPECT("poll([idle, timer], +2 s)", poll_ports(two, 2, t + XEN_MS(2000)), 0);
	woke = xen_now();
	XEN_CHECK(woke >= dl && woke < dl + SLACK && xen_evtchn_pending(tp), "2-port poll woke at %ld us\n",
		  (long)(woke - dl) / 1000);
	xen_evtchn_clear_pending(tp);
	xen_evtchn_unmask(tp);
	xen_evtchn_unmask(ipi);
	sti();

	/* poll argument checks */
	evtchn_port_t bad = 5000;
	XEN_EXPECT("poll(nr_ports 129)", poll_ports(&idle, 129, 0), -XEN_EINVAL);
	XEN_EXPECT("poll([port 5000])", poll_ports(&bad, 1, xen_now() + XEN_MS(100)), -XEN_EINVAL);

	/* shutdown: bad argument pointer, then the first shutdown_code wins. */
	XEN_EXPECT("SCHEDOP_shutdown(unmapped arg)",
		   HYPERVISOR_sched_op(SCHEDOP_shutdown, (void *)XEN_KIT_UNMAPPED_VA), -XEN_EFAULT);
	struct sched_shutdown sd = { .reason = SHUTDOWN_reboot };
	XEN_EXPECT("SCHEDOP_shutdown_code(reboot)", HYPERVISOR_sched_op(SCHEDOP_shutdown_code, &sd), 0);
	sd.reason = SHUTDOWN_crash;
	XEN_EXPECT("SCHEDOP_shutdown_code(crash) (ignored: code already set)",
		   HYPERVISOR_sched_op(SCHEDOP_shutdown_code, &sd), 0);
	printf("xen_sched: all checks passed; SCHEDOP_shutdown(poweroff) now, expect exit 80 (reboot)\n");
	sd.reason = SHUTDOWN_poweroff;
	long rc = HYPERVISOR_sched_op(SCHEDOP_shutdown, &sd);
	kit_fail("SCHEDOP_shutdown returned %ld", rc);
}
