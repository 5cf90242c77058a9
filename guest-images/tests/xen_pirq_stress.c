/*
 * xen_pirq_stress (--cpus 2 --pci-testdev; cmdline secs=N, default 10): PIRQs under load.
 *
 * Sources, all PIRQs bound to event channels:
 *  T  MSI-X entry 0 of the PCI test device, fired by the device's timer thread
 *     (TIMER: COUNT messages, PERIOD µs apart, re-armed by vCPU 0 whenever it is idle);
 *  P  the probe: MSI-X entry 1, fired synchronously by vCPU 0 (FIRE) and waited for;
 *  L  a level GSI (22, the legacy testdev line) raised/lowered by vCPU 0;
 *  E  an edge (ISA) GSI (5) pulsed by vCPU 0;
 *  U  MSI-X entry 2 names a PIRQ that is never bound: its messages go nowhere.
 *
 * vCPU 1 churns meanwhile: T's port closed and re-bound (masked first, as Linux does; the
 * closed port must stay quiet), T/L/E moved between the vCPUs (EVTCHNOP_bind_vcpu, the
 * mask / bind_vcpu / unmask sequence of Linux's rebind_evtchn_to_cpu), their ports masked
 * and unmasked (EVTCHNOP_unmask, or the shared_info bit cleared locally and, if pending,
 * set again for the hypercall, as Linux's evtchn_2l_unmask does), T's MSI-X entry masked and unmasked,
 * PHYSDEVOP_eoi of T (MSI: re-sends nothing) and E (ISA GSI: edge, re-sends nothing).
 * vCPU 0 cycles the probe through: plain, entry mask (PBA bit set, the message sent once
 * on unmask), port mask (pending, no upcall, unmask delivers), moved to vCPU 1 and back.
 *
 * Checks:
 *  - no deadlock: the run ends (progress lines every 5 s; vCPU 1's churn must advance);
 *  - no lost edge: every probe / level assertion / level re-send at EOI / edge arrives
 *    within probe_ms (default 5000);
 *  - nothing spurious: at each quiet point P, L and E have exactly the events they should
 *    (a level PIRQ whose line is low and EOI'd gets nothing more; EOIs of T and E send
 *    nothing; U's messages reach no port); T's closed port never becomes pending;
 *  - counts on both sides: SENT_MSIX + PENDED_MSIX = every message the timer and the
 *    guest caused, none dropped; PENDED_MSIX >= what the probe's masking pended;
 *    0 < events on T <= the timer's messages sent + one per unmask of its entry.
 */
#include "xen.h"
#include "pci_testdev.h"

#define AP_APIC 1
#define GSI_LEVEL 22
#define GSI_EDGE 5
#define E_TIMER 0		/* MSI-X entries */
#define E_PROBE 1
#define E_UNBOUND 2
#define TIMER_COUNT 200

enum { S_T, S_P, S_L, S_E, NSRC };
static const char *const src_name[NSRC] = { "timer", "probe", "level", "edge" };

static struct testdev td;
static uint64_t probe_ms, quiet_ms, churn_us;
static uint32_t pirq[NSRC], pirq_u;
static volatile evtchn_port_t port[NSRC];
static volatile uint32_t ev[NSRC];		/* events taken, per source (either vCPU) */
static volatile uint32_t ev_cpu[NSRC][2];
static uint32_t want[NSRC];			/* exact expectations (P, L, E) */

/* vCPU 1 <-> vCPU 0 */
static volatile int ap_ready, ap_stop, ap_done;
static volatile uint32_t ap_error;		/* first failure code of vCPU 1 (it doesn't print) */
static volatile uint32_t ap_error_arg;
static volatile uint32_t churn_ops, t_rebinds, t_moves, t_entry_masks, t_closed_pending;
static volatile uint32_t t_vcpu;		/* T's port's vCPU (vCPU 1's view) */

static void on_event(evtchn_port_t p, void *arg)
{
	unsigned s = (unsigned)(uintptr_t)arg;
	(void)p;
	/* per-vCPU count first: whoever sees ev[] move also sees which vCPU took it */
	__atomic_fetch_add(&ev_cpu[s][lapic_id() & 1], 1, __ATOMIC_SEQ_CST);
	__atomic_fetch_add(&ev[s], 1, __ATOMIC_SEQ_CST);
}

static uint32_t evs(unsigned s) { return __atomic_load_n(&ev[s], __ATOMIC_SEQ_CST); }

/* Sleep with interrupts on until COND, waking every ms (events may be taken by the other vCPU). */
#define WAIT_FOR(cond, ms) ({						\
	uint64_t __end = xen_now() + XEN_MS(ms);			\
	bool __ok;							\
	while (!(__ok = (cond)) && xen_now() < __end)			\
		XEN_WAIT_UNTIL((cond), xen_now() + XEN_MS(1));		\
	__ok;								\
})
static void pause_us(uint64_t us) { XEN_WAIT_UNTIL(false, xen_now() + us * 1000); }

static bool test_and_set_mask(evtchn_port_t p)
{
	bool old;
	asm volatile("lock btsq %2, %1" : "=@ccc"(old), "+m"(xen_shared_info->evtchn_mask[p / 64])
		     : "Ir"((uint64_t)(p % 64)) : "memory");
	return old;
}

/* Unmask as Linux's evtchn_2l_unmask may: the hypercall, or the bit cleared here and, if
 * the port is pending, set again and the hypercall made (event_2l.c evtchn_2l_unmask only
 * raises the upcall when it is the one clearing the mask bit). */
static long unmask_port(evtchn_port_t p, bool local)
{
	if (!local)
		return xen_evtchn_unmask(p);
	xen_evtchn_clear_mask_bit(p);
	if (!xen_evtchn_pending(p))
		return 0;
	xen_evtchn_mask(p);
	return xen_evtchn_unmask(p);
}

/* Linux rebind_evtchn_to_cpu: mask, EVTCHNOP_bind_vcpu, unmask if it was unmasked. */
static long move_port(evtchn_port_t p, unsigned cpu)
{
	bool was_masked = test_and_set_mask(p);
	long rc = xen_evtchn_bind_vcpu(p, cpu);
	if (!was_masked)
		unmask_port(p, false);
	return rc;
}

static void ap_fail(uint32_t code, uint32_t arg)
{
	if (!ap_error) {
		ap_error_arg = arg;
		__atomic_store_n(&ap_error, code, __ATOMIC_SEQ_CST);
	}
}

/* ---- vCPU 1: churn ---------------------------------------------------------------------- */
enum { APE_SETUP = 1, APE_MOVE, APE_CLOSE, APE_REBIND_PORT, APE_BIND, APE_CLOSED_PENDING, APE_EOI,
       APE_STATUS, APE_UNMASK };
static const char *const ap_error_name[] = { "", "setup", "bind_vcpu", "close", "re-bind gave another port",
	"bind_pirq", "closed port pending", "eoi", "status", "unmask" };

static void churn_rebind_timer(void)
{
	evtchn_port_t p = port[S_T], np = 0;
	test_and_set_mask(p);
	if (xen_evtchn_close(p) != 0)
		return ap_fail(APE_CLOSE, p);
	/* Messages now go nowhere (send_guest_pirq: no port).  Give an irqfd message the
	 * kernel took before the close a moment, then the port must stay clear. */
	pause_us(500);
	xen_evtchn_clear_pending(p);
	uint64_t end = xen_now() + XEN_MS(3);
	while (xen_now() < end)
		if (xen_evtchn_pending(p)) {
			t_closed_pending++;
			xen_evtchn_clear_pending(p);
		}
	if (xen_bind_pirq(pirq[S_T], 0, &np) != 0)
		return ap_fail(APE_BIND, p);
	if (np != p)		/* Xen's get_free_port: the lowest free one, i.e. the one just closed */
		return ap_fail(APE_REBIND_PORT, np);
	xen_evtchn_set_handler(np, on_event, (void *)(uintptr_t)S_T);
	t_vcpu = 0;
	if (unmask_port(np, false) != 0)
		return ap_fail(APE_UNMASK, np);
	t_rebinds++;
}

static void churn_one(unsigned op)
{
	switch (op % 8) {
	case 0:		/* T's MSI-X entry: messages meanwhile pend, one is sent on unmask */
		td_entry_mask(&td, E_TIMER, true);
		pause_us(churn_us);
		td_entry_mask(&td, E_TIMER, false);
		t_entry_masks++;
		break;
	case 1:		/* T's port mask bit */
		test_and_set_mask(port[S_T]);
		pause_us(churn_us);
		if (unmask_port(port[S_T], op & 8) != 0)
			ap_fail(APE_UNMASK, port[S_T]);
		break;
	case 2:
		if (move_port(port[S_T], !t_vcpu) != 0)
			return ap_fail(APE_MOVE, port[S_T]);
		t_vcpu = !t_vcpu;
		t_moves++;
		break;
	case 3:
		churn_rebind_timer();
		break;
	case 4:
	case 5: {
		unsigned s = op % 8 == 4 ? S_L : S_E;
		struct evtchn_status st;
		if (xen_evtchn_status(port[s], &st) != 0 || st.status != EVTCHNSTAT_pirq || st.u.pirq != pirq[s])
			return ap_fail(APE_STATUS, port[s]);
		if (move_port(port[s], !st.vcpu) != 0)
			return ap_fail(APE_MOVE, port[s]);
		if (s == S_E && xen_pirq_eoi(pirq[S_E]) != 0)	/* ISA GSI: never re-sent */
			return ap_fail(APE_EOI, pirq[S_E]);
		break;
	}
	case 6:		/* L's and E's ports masked for a while: their events wait, then arrive */
		test_and_set_mask(port[S_L]);
		test_and_set_mask(port[S_E]);
		pause_us(churn_us);
		if (unmask_port(port[S_L], op & 8) != 0 || unmask_port(port[S_E], !(op & 8)) != 0)
			ap_fail(APE_UNMASK, port[S_L]);
		break;
	case 7:		/* MSI pirq: eoi re-sends nothing */
		if (xen_pirq_eoi(pirq[S_T]) != 0)
			ap_fail(APE_EOI, pirq[S_T]);
		break;
	}
}

static void ap_main(void)
{
	xen_wait_init();
	if (xen_register_vcpu_info(xen_scratch_page(1), 64) != 0)
		ap_fail(APE_SETUP, 0);
	xen_use_upcall_vector();
	__atomic_store_n(&ap_ready, 1, __ATOMIC_SEQ_CST);
	while (!ap_stop && !ap_error) {
		churn_one(churn_ops);
		__atomic_fetch_add(&churn_ops, 1, __ATOMIC_SEQ_CST);
		pause_us(churn_us);
	}
	/* leave everything bound, unmasked and on vCPU 0 for the final counts */
	if (!ap_error && t_vcpu && move_port(port[S_T], 0) == 0)
		t_vcpu = 0;
	for (unsigned s = S_L; s <= S_E; s++)
		move_port(port[s], 0);
	__atomic_store_n(&ap_done, 1, __ATOMIC_SEQ_CST);
	for (;;)
		XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(20));
}

/* ---- vCPU 0: probe, lines, timer, watchdog -------------------------------------------------- */
static uint32_t timer_total, probe_sent, probe_pended, u_fires, probes, rounds;

static void fire(int entry) { td_write(&td, TD_FIRE, TD_TARGET_MSIX | (uint32_t)entry); }

static void expect_event(unsigned s, const char *what)
{
	want[s]++;
	XEN_CHECK(WAIT_FOR(evs(s) >= want[s], probe_ms), "lost edge: %s: %s has %u events, want %u (round %u)\n",
		  what, src_name[s], evs(s), want[s], rounds);
}

/* P, L and E have exactly what they should, after a quiet while. */
static void quiet_point(const char *what)
{
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(quiet_ms));
	for (unsigned s = S_P; s <= S_E; s++)
		XEN_CHECK(evs(s) == want[s], "spurious: after %s: %s has %u events, want %u (round %u)\n", what,
			  src_name[s], evs(s), want[s], rounds);
}

static void probe_round(unsigned kind)
{
	evtchn_port_t p = port[S_P];
	probes++;
	switch (kind % 5) {
	case 0:
	case 1:
		fire(E_PROBE);
		probe_sent++;
		expect_event(S_P, "probe");
		break;
	case 2:		/* entry mask; U fired meanwhile */
		td_entry_mask(&td, E_PROBE, true);
		fire(E_PROBE);
		probe_pended++;
		fire(E_UNBOUND);
		u_fires++;
		quiet_point("probe entry masked, unbound pirq fired");
		XEN_CHECK(td_pba(&td) & 1u << E_PROBE, "probe entry masked: no PBA bit\n");
		td_entry_mask(&td, E_PROBE, false);
		expect_event(S_P, "probe held by its entry mask, sent on unmask");
		break;
	case 3:		/* port mask: pending, no upcall; unmask delivers */
		xen_evtchn_mask(p);
		fire(E_PROBE);
		probe_sent++;
		XEN_CHECK(WAIT_FOR(xen_evtchn_pending(p), probe_ms), "masked probe port never pending\n");
		quiet_point("probe port masked");
		XEN_CHECK(unmask_port(p, probes & 1) == 0, "unmask(probe)\n");
		expect_event(S_P, "probe held by the port mask, delivered by unmask");
		break;
	case 4: {	/* moved to vCPU 1 and back */
		uint32_t on1 = ev_cpu[S_P][1];
		XEN_CHECK(move_port(p, 1) == 0, "bind_vcpu(probe, 1)\n");
		fire(E_PROBE);
		probe_sent++;
		expect_event(S_P, "probe on vCPU 1");
		XEN_CHECK(ev_cpu[S_P][1] == on1 + 1, "probe moved to vCPU 1: taken by vCPU 1 %u times (cpu0 %u)\n",
			  ev_cpu[S_P][1] - on1, ev_cpu[S_P][0]);
		XEN_CHECK(move_port(p, 0) == 0, "bind_vcpu(probe, 0)\n");
		break;
	}
	}
}

static void line_rounds(void)
{
	/* level: assertion, re-send at eoi while high, nothing once low and EOI'd */
	testdev_set_gsi(GSI_LEVEL, 1);
	expect_event(S_L, "level assertion");
	XEN_CHECK(xen_pirq_eoi(pirq[S_L]) == 0, "eoi(level)\n");
	expect_event(S_L, "level re-sent at eoi");
	testdev_set_gsi(GSI_LEVEL, 0);
	XEN_CHECK(xen_pirq_eoi(pirq[S_L]) == 0, "eoi(level, low)\n");
	/* edge: one event per rising edge, eoi re-sends nothing */
	testdev_set_gsi(GSI_EDGE, 1);
	expect_event(S_E, "edge");
	XEN_CHECK(xen_pirq_eoi(pirq[S_E]) == 0, "eoi(edge)\n");
	testdev_set_gsi(GSI_EDGE, 0);
}

static void timer_rearm(void)
{
	if (td_reg(&td, TD_TIMER) == 0) {
		/* COUNT is per FIRE too: the timer takes it at TIMER, the probe's FIREs want 1 */
		td_write(&td, TD_COUNT, TIMER_COUNT);
		td_write(&td, TD_TIMER, TD_TARGET_MSIX | E_TIMER);
		td_write(&td, TD_COUNT, 1);
		timer_total += TIMER_COUNT;
	}
}

static void check_ap(void)
{
	uint32_t e = __atomic_load_n(&ap_error, __ATOMIC_SEQ_CST);
	XEN_CHECK(!e, "vCPU 1: %s (%u)\n", ap_error_name[e < 10 ? e : 0], ap_error_arg);
}

static void setup_pirq(unsigned s, uint32_t p, int entry)
{
	pirq[s] = p;
	if (entry >= 0)
		td_entry_program(&td, entry, XEN_PIRQ_MSI_ADDR(p), XEN_PIRQ_MSI_DATA);
	evtchn_port_t pt;
	XEN_CHECK(xen_bind_pirq(p, 0, &pt) == 0, "bind_pirq(%u)\n", p);
	port[s] = pt;
	xen_evtchn_set_handler(pt, on_event, (void *)(uintptr_t)s);
	if (entry >= 0)
		XEN_CHECK(!td_entry_masked(&td, entry), "entry %d still masked after bind\n", entry);
}

void kit_main(void)
{
	uint64_t secs = xen_cmdline_u64("secs", 10);
	uint32_t period_us = (uint32_t)xen_cmdline_u64("period_us", 2000);
	probe_ms = xen_cmdline_u64("probe_ms", 5000);
	quiet_ms = xen_cmdline_u64("quiet_ms", 10);
	churn_us = xen_cmdline_u64("churn_us", 500);
	printf("xen_pirq_stress: %lus, timer period %uus, churn %luus\n", secs, period_us, churn_us);
	xen_test_start("xen_pirq_stress");
	XEN_EXPECT("register_vcpu_info(0)", xen_register_vcpu_info(xen_scratch_page(0), 0), 0);
	xen_use_upcall_vector();
	if (!td_find(&td))
		kit_fail("xen_pirq_stress: no PCI test device (run with --pci-testdev)");
	td_clear_counters(&td);
	td_msix_ctrl(&td, MSIX_FLAGS_ENABLE);

	uint32_t p;
	int g;
	for (unsigned s = S_T; s <= S_P; s++) {
		XEN_CHECK(xen_get_free_pirq(MAP_PIRQ_TYPE_MSI, &p) == 0, "get_free_pirq\n");
		setup_pirq(s, p, s == S_T ? E_TIMER : E_PROBE);
	}
	XEN_CHECK(xen_get_free_pirq(MAP_PIRQ_TYPE_MSI, &pirq_u) == 0, "get_free_pirq\n");
	td_entry_program(&td, E_UNBOUND, XEN_PIRQ_MSI_ADDR(pirq_u), XEN_PIRQ_MSI_DATA);
	td_entry_mask(&td, E_UNBOUND, false);
	g = -1;
	XEN_CHECK(xen_map_pirq_gsi(GSI_LEVEL, &g) == 0, "map_pirq(GSI %d)\n", GSI_LEVEL);
	setup_pirq(S_L, (uint32_t)g, -1);
	g = -1;
	XEN_CHECK(xen_map_pirq_gsi(GSI_EDGE, &g) == 0, "map_pirq(GSI %d)\n", GSI_EDGE);
	setup_pirq(S_E, (uint32_t)g, -1);
	XEN_CHECK(xen_pirq_eoi(pirq[S_L]) == 0 && xen_pirq_eoi(pirq[S_E]) == 0, "first eoi\n");
	printf("xen_pirq_stress: pirqs timer %u (port %u) probe %u (port %u) level %u (port %u) edge %u "
	       "(port %u) unbound %u\n", pirq[S_T], port[S_T], pirq[S_P], port[S_P], pirq[S_L], port[S_L],
	       pirq[S_E], port[S_E], pirq_u);

	/* a first probe and line round before the load */
	probe_round(0);
	line_rounds();
	quiet_point("setup");

	if (kit_start_ap(AP_APIC, ap_main) != 0)
		kit_fail("xen_pirq_stress: AP did not start");
	XEN_CHECK(WAIT_FOR(ap_ready || ap_error, 10000) && !ap_error, "AP setup (error %u)\n", ap_error);
	td_write(&td, TD_PERIOD, period_us);
	timer_rearm();

	uint64_t start = xen_now(), end = start + secs * 1000000000ull, next = start + XEN_MS(5000);
	uint32_t churn_seen = 0;
	while (xen_now() < end) {
		rounds++;
		probe_round(rounds);
		line_rounds();
		if (rounds % 5 == 0)
			quiet_point("a round");
		timer_rearm();
		check_ap();
		if (xen_now() >= next) {
			uint32_t c = churn_ops;
			printf("xen_pirq_stress: t=%lus rounds=%u probes=%u timer: events=%u (cpu0 %u cpu1 %u) armed=%u; "
			       "churn=%u (rebinds %u moves %u entry masks %u)\n",
			       (unsigned long)((xen_now() - start) / 1000000000ull), rounds, probes, evs(S_T), ev_cpu[S_T][0],
			       ev_cpu[S_T][1], timer_total, c, t_rebinds, t_moves, t_entry_masks);
			XEN_CHECK(c != churn_seen, "watchdog: vCPU 1 made no progress in 5 s (churn %u)\n", c);
			churn_seen = c;
			next += XEN_MS(5000);
		}
	}

	/* wind down: vCPU 1 stops churning, the timer finishes its burst, nothing is in flight */
	ap_stop = 1;
	XEN_CHECK(WAIT_FOR(ap_done, 20000), "vCPU 1 did not stop (churn %u)\n", churn_ops);
	check_ap();
	XEN_CHECK(WAIT_FOR(td_reg(&td, TD_TIMER) == 0, 20000), "the timer did not finish\n");
	quiet_point("the end");
	probe_round(0);
	line_rounds();
	quiet_point("the last round");

	uint32_t sent = td_reg(&td, TD_SENT_MSIX), pended = td_reg(&td, TD_PENDED_MSIX);
	uint32_t t_sent = sent - probe_sent - u_fires, t_pended = pended - probe_pended;
	printf("xen_pirq_stress: device: MSI-X sent %u pended %u dropped %u; guest: timer armed %u, probe sent %u "
	       "pended %u, unbound %u\n", sent, pended, td_reg(&td, TD_DROPPED), timer_total, probe_sent,
	       probe_pended, u_fires);
	XEN_EXPECT("SENT_MSIX + PENDED_MSIX = timer + probe + unbound messages", sent + pended,
		   timer_total + probe_sent + probe_pended + u_fires);
	XEN_EXPECT("DROPPED", td_reg(&td, TD_DROPPED), 0);
	XEN_CHECK(sent >= probe_sent + u_fires && pended >= probe_pended, "device counted fewer probe messages\n");
	XEN_CHECK(evs(S_T) > 0, "no timer event at all\n");
	XEN_CHECK(evs(S_T) <= t_sent + t_entry_masks, "timer: %u events > %u sent + %u entry unmasks\n", evs(S_T),
		  t_sent, t_entry_masks);
	XEN_EXPECT("events on T's closed port", t_closed_pending, 0);
	for (unsigned s = S_P; s <= S_E; s++)
		XEN_CHECK(evs(s) == want[s], "%s: %u events, want %u\n", src_name[s], evs(s), want[s]);
	printf("xen_pirq_stress: timer: %u events from %u sent + %u pended messages; probe %u, level %u, edge %u "
	       "events (all expected); vCPU 1: %u churn ops, %u rebinds, %u moves, %u entry masks; %u rounds\n",
	       evs(S_T), t_sent, t_pended, evs(S_P), evs(S_L), evs(S_E), churn_ops, t_rebinds, t_moves,
	       t_entry_masks, rounds);
	xen_pass();
}
