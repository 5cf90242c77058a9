/*
 * xen_timer: VIRQ_TIMER from the singleshot timer (VCPUOP_set/stop_singleshot
 * and set_timer_op, which share one timer) and the periodic timer
 * (VCPUOP_set/stop_periodic_timer), with accuracy measured on the pvclock:
 * an event never arrives before its deadline and at most slack_ms (default
 * 50, cmdline "slack_ms=N") after it.
 * Xen: xen/common/domain.c do_vcpu_op (period >= 1 ms, singleshot only on
 * the calling vCPU), xen/common/sched/core.c do_set_timer_op (0 = stop),
 * vcpu_periodic_timer_work / vcpu_singleshot_timer_fn -> send_timer_event.
 */
#include "xen.h"

static uint64_t slack;
static evtchn_port_t tp;

/* N: the VIRQ_TIMER count taken before the timer was armed. */
static void expect_fire(const char *what, uint64_t deadline, uint32_t n)
{
	if (!XEN_WAIT_UNTIL(xen_evtchn_count[tp] > n, deadline + XEN_MS(1000)))
		kit_fail("xen_timer: %s: no VIRQ_TIMER within 1 s of the deadline", what);
	uint64_t at = xen_evtchn_last_ns[tp];
	if (at < deadline || at > deadline + slack)
		kit_fail("xen_timer: %s: fired %ld us from the deadline (allowed 0..%lu us)", what,
			 (long)(at - deadline) / 1000, slack / 1000);
	printf("xen_timer: %s: fired %ld us after the deadline ok\n", what, (long)(at - deadline) / 1000);
}

static void expect_quiet(const char *what, uint64_t until, uint32_t n)
{
	XEN_WAIT_UNTIL(xen_evtchn_count[tp] != n, until);
	if (xen_evtchn_count[tp] != n)
		kit_fail("xen_timer: %s: VIRQ_TIMER fired", what);
	printf("xen_timer: %s: no event ok\n", what);
}

void kit_main(void)
{
	printf("xen_timer: singleshot, set_timer_op, periodic; accuracy on the pvclock\n");
	xen_test_start("xen_timer");
	xen_use_upcall_vector();
	slack = XEN_MS(xen_cmdline_u64("slack_ms", 50));

	XEN_EXPECT("bind_virq(TIMER, 0)", xen_evtchn_bind_virq(VIRQ_TIMER, 0, &tp), 0);
	XEN_EXPECT("stop_periodic_timer(0)", HYPERVISOR_vcpu_op(VCPUOP_stop_periodic_timer, 0, NULL), 0);
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(30));		/* nothing periodic left over */

	uint32_t n = xen_evtchn_count[tp];
	uint64_t dl = xen_now() + XEN_MS(20);
	XEN_EXPECT("set_singleshot_timer(+20 ms)", xen_set_singleshot(dl, 0), 0);
	expect_fire("singleshot +20 ms", dl, n);
	n = xen_evtchn_count[tp];
	dl = xen_now() + XEN_MS(5);
	XEN_EXPECT("set_singleshot_timer(+5 ms)", xen_set_singleshot(dl, 0), 0);
	expect_fire("singleshot +5 ms", dl, n);
	n = xen_evtchn_count[tp];
	dl = xen_now() - XEN_MS(1);
	XEN_EXPECT("set_singleshot_timer(1 ms ago)", xen_set_singleshot(dl, 0), 0);
	expect_fire("singleshot in the past", dl, n);

	/* One timer: re-arming replaces the earlier deadline.  Back-to-back calls, printed
	 * afterwards, so a slow console cannot let the first deadline pass in between. */
	long r1, r2;
	n = xen_evtchn_count[tp];
	uint64_t t = xen_now();
	r1 = xen_set_singleshot(t + XEN_MS(100), 0);
	r2 = xen_set_singleshot(t + XEN_MS(10), 0);
	XEN_EXPECT("set_singleshot_timer(+100 ms)", r1, 0);
	XEN_EXPECT("set_singleshot_timer(+10 ms)", r2, 0);
	expect_fire("re-armed singleshot +10 ms", t + XEN_MS(10), n);
	expect_quiet("the replaced +100 ms deadline", t + XEN_MS(140), n + 1);

	n = xen_evtchn_count[tp];
	t = xen_now();
	r1 = xen_set_singleshot(t + XEN_MS(100), 0);
	r2 = HYPERVISOR_vcpu_op(VCPUOP_stop_singleshot_timer, 0, NULL);
	XEN_EXPECT("set_singleshot_timer(+100 ms)", r1, 0);
	XEN_EXPECT("stop_singleshot_timer(0)", r2, 0);
	expect_quiet("stopped singleshot", t + XEN_MS(140), n);

	/* set_timer_op: the same timer, absolute ns; 0 stops it. */
	n = xen_evtchn_count[tp];
	dl = xen_now() + XEN_MS(15);
	XEN_EXPECT("set_timer_op(+15 ms)", HYPERVISOR_set_timer_op(dl), 0);
	expect_fire("set_timer_op +15 ms", dl, n);
	n = xen_evtchn_count[tp];
	t = xen_now();
	r1 = HYPERVISOR_set_timer_op(t + XEN_MS(100));
	r2 = HYPERVISOR_set_timer_op(0);
	XEN_EXPECT("set_timer_op(+100 ms)", r1, 0);
	XEN_EXPECT("set_timer_op(0) (stop)", r2, 0);
	expect_quiet("set_timer_op(0)", t + XEN_MS(140), n);
	n = xen_evtchn_count[tp];
	t = xen_now();
	r1 = HYPERVISOR_set_timer_op(t + XEN_MS(100));
	r2 = HYPERVISOR_vcpu_op(VCPUOP_stop_singleshot_timer, 0, NULL);
	XEN_EXPECT("set_timer_op(+100 ms)", r1, 0);
	XEN_EXPECT("stop_singleshot_timer (stops set_timer_op's timer)", r2, 0);
	expect_quiet("set_timer_op timer stopped via VCPUOP", t + XEN_MS(140), n);

	/* Periodic: 10 ms ticks, each no earlier than k * period. */
	struct vcpu_set_periodic_timer per = { .period_ns = XEN_MS(10) };
	uint32_t n0 = xen_evtchn_count[tp];
	t = xen_now();
	XEN_EXPECT("set_periodic_timer(10 ms)", HYPERVISOR_vcpu_op(VCPUOP_set_periodic_timer, 0, &per), 0);
	XEN_WAIT_UNTIL(false, t + XEN_MS(55));
	XEN_EXPECT("stop_periodic_timer(0)", HYPERVISOR_vcpu_op(VCPUOP_stop_periodic_timer, 0, NULL), 0);
	/* The timer ran until the stop took effect: a slow VMM (nested, emulated) stretches that. */
	uint64_t ran = xen_now() - t;
	uint32_t ticks = xen_evtchn_count[tp] - n0;
	XEN_CHECK(ticks >= 3 && ticks <= ran / XEN_MS(10) + 1, "%u ticks in %lu us at 10 ms\n", ticks, ran / 1000);
	XEN_CHECK(xen_evtchn_last_ns[tp] + XEN_MS(1) >= t + XEN_MS(10) * (ticks - 1),
		  "last of %u ticks at %lu us, too early\n", ticks, (xen_evtchn_last_ns[tp] - t) / 1000);
	printf("xen_timer: periodic 10 ms: %u ticks in 55 ms ok\n", ticks);
	expect_quiet("stopped periodic timer", xen_now() + XEN_MS(35), xen_evtchn_count[tp]);
	per.period_ns = 500000;
	XEN_EXPECT("set_periodic_timer(500 us)", HYPERVISOR_vcpu_op(VCPUOP_set_periodic_timer, 0, &per),
		   -XEN_EINVAL);

	/* Hostile deadlines (xen/common/sched/core.c do_set_timer_op): wrapped negative, or more
	 * than 2^50 ns (~13 days) ahead, fire in 100 ms; a singleshot deadline is an s_time_t,
	 * so one from 2^63 on is in the past and fires at once.  The timers keep working. */
	n = xen_evtchn_count[tp];
	t = xen_now();
	XEN_EXPECT("set_timer_op(2^63 + 5) (wrapped)", HYPERVISOR_set_timer_op((1ULL << 63) + 5), 0);
	expect_fire("wrapped set_timer_op -> +100 ms", t + XEN_MS(100), n);
	n = xen_evtchn_count[tp];
	t = xen_now();
	XEN_EXPECT("set_timer_op(now + 2^51 ns)", HYPERVISOR_set_timer_op(t + (1ULL << 51)), 0);
	expect_fire("far set_timer_op -> +100 ms", t + XEN_MS(100), n);
	n = xen_evtchn_count[tp];
	t = xen_now();
	XEN_EXPECT("set_singleshot_timer(2^64 - 1)", xen_set_singleshot(~0ULL, 0), 0);
	expect_fire("singleshot at 2^64 - 1 (a past s_time_t)", t, n);
	for (int i = 0; i < 300; i++)		/* far deadlines, each replaced (bounded: tests/test_xen_bookkeeping.py) */
		HYPERVISOR_set_timer_op(xen_now() + XEN_MS(100000 + i));
	n = xen_evtchn_count[tp];
	dl = xen_now() + XEN_MS(10);
	XEN_EXPECT("set_singleshot_timer(+10 ms) after 300 re-arms", xen_set_singleshot(dl, 0), 0);
	expect_fire("singleshot +10 ms after hostile deadlines", dl, n);

	/* Singleshot timers belong to the calling vCPU. */
	struct vcpu_set_singleshot_timer ss = { .timeout_abs_ns = xen_now() + XEN_MS(10) };
	XEN_EXPECT("set_singleshot_timer(vcpu 1) with one vCPU",
		   HYPERVISOR_vcpu_op(VCPUOP_set_singleshot_timer, 1, &ss), -XEN_ENOENT);
	xen_pass();
}
