/*
 * xen_snapshot: Xen state that a snapshot must carry (port transport): a periodic
 * VIRQ_TIMER, an IPI sent and received once per tick, a port left pending but masked, and a
 * level GSI PIRQ (GSI 20 from the testdev, held high, not EOI'd).  It prints
 * An MSI PIRQ (the testdev sends an MSI naming it) is sent once per tick too.  It prints
 * "tick=N ipi=M" every 20 ticks until ticks=N (cmdline, default 400); then checks every
 * event arrived exactly once: each IPI once, the masked port not at all until unmasked
 * and then once, the PIRQ once, and once more at its EOI (the line is still high).
 * A registered runstate area (kept by KVM with the kernel transport) must go on being
 * updated across restores: its times never go back nor past system time, and a last
 * 20 ms poll moves it.
 * The xenstore daemon's state must come back whole too: a watch set before the loop fires
 * for each write the loop makes (every 20 ticks: written, its event awaited, read back), a
 * transaction opened before the loop that only read an untouched node commits at the end,
 * and one that read the node the loop writes fails with EAGAIN.  A request may be cut in
 * two by a snapshot (header and payload are two sends), so the daemon's half-read request
 * is carried too.
 */
#include "xen.h"

static uint32_t xs_events;

/* write the loop's node, await its watch event, read it back */
static void xs_step(uint32_t tick)
{
	char val[16], got[16], path[64], token[16];
	snprintf(val, sizeof(val), "%u", tick);
	XEN_EXPECT("xs write data/snap", xs_write(0, "data/snap", val), 0);
	if (xs_next_event(path, sizeof(path), token, sizeof(token), xen_now() + XEN_MS(5000)))
		kit_fail("xen_snapshot: no watch event for data/snap=%s (%u so far)", val, xs_events);
	if (strcmp(path, "data/snap") || strcmp(token, "snaptok"))
		kit_fail("xen_snapshot: watch event %s %s", path, token);
	xs_events++;
	XEN_EXPECT("xs read data/snap", xs_read(0, "data/snap", got, sizeof(got)), 0);
	if (strcmp(got, val))
		kit_fail("xen_snapshot: data/snap reads %s, wrote %s", got, val);
}

static struct vcpu_runstate_info rs __attribute__((aligned(64)));
static uint64_t rs_last;			/* state_entry_time at the last check */

static void check_runstate(const char *when)
{
	volatile struct vcpu_runstate_info *vr = &rs;
	uint64_t entry = vr->state_entry_time & ~XEN_RUNSTATE_UPDATE;
	uint64_t sum = vr->time[0] + vr->time[1] + vr->time[2] + vr->time[3];
	uint64_t now = xen_now();
	if (entry < rs_last || entry > now || sum > now)
		kit_fail("xen_snapshot: runstate %s: entry %lu (last %lu), times %lu, now %lu", when, entry, rs_last,
			 sum, now);
	rs_last = entry;
}

void kit_main(void)
{
	evtchn_port_t tp, ip, mp, pp, qp;
	int pirq = -1;
	uint32_t msi_pirq;
	uint32_t sent = 0, printed = 0, last;

	printf("xen_snapshot: boot\n");
	xen_test_start("xen_snapshot");
	xen_use_upcall_vector();
	last = (uint32_t)xen_cmdline_u64("ticks", 400);
	struct vcpu_register_runstate_memory_area ra = { .addr = (uintptr_t)&rs };
	XEN_EXPECT("register_runstate_memory_area", HYPERVISOR_vcpu_op(VCPUOP_register_runstate_memory_area, 0, &ra), 0);
	check_runstate("at registration");

	XEN_EXPECT("bind_virq(TIMER)", xen_evtchn_bind_virq(VIRQ_TIMER, 0, &tp), 0);
	XEN_EXPECT("bind_ipi", xen_evtchn_bind_ipi(0, &ip), 0);
	XEN_EXPECT("bind_ipi (masked)", xen_evtchn_bind_ipi(0, &mp), 0);
	xen_evtchn_mask(mp);
	XEN_EXPECT("send (masked)", xen_evtchn_send(mp), 0);
	XEN_EXPECT("map_pirq(GSI 20)", xen_map_pirq_gsi(20, &pirq), 0);
	XEN_EXPECT("bind_pirq", xen_bind_pirq((uint32_t)pirq, 0, &pp), 0);
	XEN_EXPECT("get_free_pirq(MSI)", xen_get_free_pirq(MAP_PIRQ_TYPE_MSI, &msi_pirq), 0);
	XEN_EXPECT("bind_pirq(MSI)", xen_bind_pirq(msi_pirq, 0, &qp), 0);
	testdev_set_gsi(20, 1);			/* level, held high: one event until the EOI */
	if (!XEN_WAIT_UNTIL(xen_evtchn_count[pp] == 1, xen_now() + XEN_MS(1000)))
		kit_fail("xen_snapshot: no PIRQ event");

	char buf[16], path[64], token[16];
	uint32_t tx_keep, tx_conflict;
	xs_init(1);
	XEN_EXPECT("xs write data/snap", xs_write(0, "data/snap", "start"), 0);
	XEN_EXPECT("xs write data/still", xs_write(0, "data/still", "x"), 0);
	XEN_EXPECT("xs watch data/snap", xs_watch("data/snap", "snaptok"), 0);
	XEN_EXPECT("xs initial watch event", xs_next_event(path, sizeof(path), token, sizeof(token),
							    xen_now() + XEN_MS(5000)), 0);
	XEN_EXPECT("xs tx_start (keep)", xs_tx_start(&tx_keep), 0);
	XEN_EXPECT("xs read data/still in tx", xs_read(tx_keep, "data/still", buf, sizeof(buf)), 0);
	XEN_EXPECT("xs write data/tx in tx", xs_write(tx_keep, "data/tx", "kept"), 0);
	XEN_EXPECT("xs tx_start (conflict)", xs_tx_start(&tx_conflict), 0);
	XEN_EXPECT("xs read data/snap in tx", xs_read(tx_conflict, "data/snap", buf, sizeof(buf)), 0);

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
			testdev_send_msi(XEN_PIRQ_MSI_ADDR(msi_pirq), XEN_PIRQ_MSI_DATA);
			if (!XEN_WAIT_UNTIL(xen_evtchn_count[qp] == sent, xen_now() + XEN_MS(2000)))
				kit_fail("xen_snapshot: MSI PIRQ %u never arrived (%u)", sent, xen_evtchn_count[qp]);
		}
		if (t >= printed + 20) {
			printed = t - t % 20;
			printf("tick=%u ipi=%u\n", printed, xen_evtchn_count[ip]);
			check_runstate("while ticking");
			xs_step(printed);
		}
		XEN_WAIT_UNTIL(xen_evtchn_count[tp] != t, xen_now() + XEN_MS(100));
	}
	HYPERVISOR_vcpu_op(VCPUOP_stop_periodic_timer, 0, NULL);
	uint64_t before = rs_last;
	evtchn_port_t idle;
	XEN_EXPECT("alloc_unbound (idle port)", xen_evtchn_alloc_unbound(DOMID_SELF, &idle), 0);
	struct sched_poll poll = { .ports = (uintptr_t)&idle, .nr_ports = 1, .timeout = xen_now() + XEN_MS(20) };
	XEN_EXPECT("poll(idle port, 20 ms)", HYPERVISOR_sched_op(SCHEDOP_poll, &poll), 0);
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(2));	/* let the area be refreshed */
	check_runstate("after a poll");
	if (rs_last == before)
		kit_fail("xen_snapshot: the runstate area was not updated by a poll (entry %lu)", rs_last);
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
	if (xen_evtchn_count[mp] != 1 || xen_evtchn_count[pp] != 2 || xen_evtchn_count[ip] != sent ||
	    xen_evtchn_count[qp] != sent)
		kit_fail("xen_snapshot: late duplicates");
	XEN_EXPECT("xs tx_end (keep): commits", xs_tx_end(tx_keep, true), 0);
	XEN_EXPECT("xs read data/tx", xs_read(0, "data/tx", buf, sizeof(buf)), 0);
	if (strcmp(buf, "kept"))
		kit_fail("xen_snapshot: data/tx reads %s after the commit", buf);
	XEN_EXPECT("xs tx_end (conflict): EAGAIN", xs_tx_end(tx_conflict, true), 11);
	printf("xen_snapshot: %u xenstore watch events, the transactions kept\n", xs_events);
	printf("xen_snapshot: %u ticks, %u IPIs, %u MSI PIRQs, each event once\n", printed, sent, sent);
	kit_pass();
}
