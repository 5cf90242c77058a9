/*
 * xen_ipi_smp (--cpus 2): event channels across two vCPUs.
 *  - VCPUOP_is_up(1) is 0 until the AP is started by INIT/SIPI, then 1
 *    (an HVM AP is _VPF_down until hvm_vcpu_reset_state clears it);
 *  - each vCPU sets its own per-vCPU upcall vector, registers its own
 *    vcpu_info and binds an IPI port to itself; cross sends arrive on the
 *    bound vCPU (EVTCHNOP_bind_ipi: notify_vcpu_id = vcpu);
 *  - EVTCHNOP_bind_vcpu moves an interdomain port to vCPU 1: the AP gets
 *    it, status() reports vcpu 1; IPI ports cannot move (-EINVAL);
 *  - a per-vCPU VIRQ_TIMER on each vCPU, armed by that vCPU;
 *  - SCHEDOP_poll on vCPU 0 is woken by the AP's send (evtchn_check_pollers);
 *  - VCPUOP_set_singleshot_timer for another vCPU -> -EINVAL;
 *  - VCPUOP_down(1) stops the AP (is_up 0), VCPUOP_up(1) resumes it.
 */
#include "xen.h"

#define AP_APIC 1
static volatile int ap_state;		/* 1 ready, 2 got ipi, 3 got moved port, 4 timer ok */
static volatile int ap_go_poll, ap_error;
static volatile uint32_t ap_ticks;
static volatile evtchn_port_t port_bsp, port_ap, port_moved, ap_timer_port;
static volatile uint32_t moved_base;
static volatile uint32_t ap_vcpu;

static void ap_fail(int code) { ap_error = code; for (;;) { cli(); hlt(); } }

static void ap_main(void)
{
	xen_wait_init();
	ap_vcpu = xen_vcpu_id();
	if (xen_register_vcpu_info(xen_scratch_page(1), 64) != 0)
		ap_fail(1);
	xen_use_upcall_vector();
	evtchn_port_t p;
	if (xen_evtchn_bind_ipi(ap_vcpu, &p) != 0)
		ap_fail(2);
	port_ap = p;
	__atomic_store_n(&ap_state, 1, __ATOMIC_SEQ_CST);

	/* IPI from the BSP -> answer on the BSP's port. */
	if (!XEN_WAIT_UNTIL(xen_evtchn_count[p] >= 1, xen_now() + XEN_MS(5000)))
		ap_fail(3);
	xen_evtchn_send(port_bsp);
	__atomic_store_n(&ap_state, 2, __ATOMIC_SEQ_CST);

	/* The port the BSP moved here with bind_vcpu. */
	if (!XEN_WAIT_UNTIL(port_moved && xen_evtchn_count[port_moved] > moved_base, xen_now() + XEN_MS(5000)))
		ap_fail(4);
	__atomic_store_n(&ap_state, 3, __ATOMIC_SEQ_CST);

	/* Our own VIRQ_TIMER, armed by us. */
	evtchn_port_t tp;
	if (xen_evtchn_bind_virq(VIRQ_TIMER, ap_vcpu, &tp) != 0)
		ap_fail(5);
	ap_timer_port = tp;
	if (xen_set_singleshot(xen_now() + XEN_MS(5), 0) != 0)
		ap_fail(6);
	if (!XEN_WAIT_UNTIL(xen_evtchn_count[tp] >= 1, xen_now() + XEN_MS(5000)))
		ap_fail(7);
	__atomic_store_n(&ap_state, 4, __ATOMIC_SEQ_CST);

	/* Wake the BSP's poll: send 10 ms after it asks. */
	if (!XEN_WAIT_UNTIL(ap_go_poll, xen_now() + XEN_MS(5000)))
		ap_fail(8);
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(10));
	xen_evtchn_send(port_bsp);
	for (;;) {			/* a heartbeat for the VCPUOP_down/up check */
		XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(1));
		ap_ticks++;
	}
}

static void wait_ap(int state, const char *what)
{
	if (!XEN_WAIT_UNTIL(ap_state >= state || ap_error, xen_now() + XEN_MS(5000)) || ap_error)
		kit_fail("xen_ipi_smp: AP: %s (state %d, error %d)", what, ap_state, ap_error);
}

void kit_main(void)
{
	printf("xen_ipi_smp: event channels across 2 vCPUs\n");
	xen_test_start("xen_ipi_smp");
	XEN_EXPECT("register_vcpu_info(0)", xen_register_vcpu_info(xen_scratch_page(0), 0), 0);
	xen_use_upcall_vector();

	XEN_EXPECT("is_up(1) before INIT/SIPI", HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, NULL), 0);
	evtchn_port_t pb;
	XEN_EXPECT("bind_ipi(0)", xen_evtchn_bind_ipi(0, &pb), 0);
	port_bsp = pb;
	if (kit_start_ap(AP_APIC, ap_main) != 0)
		kit_fail("xen_ipi_smp: AP did not start");
	wait_ap(1, "setup");
	XEN_EXPECT("AP's Xen vcpu id (CPUID base+4 EBX)", ap_vcpu, 1);
	XEN_EXPECT("is_up(1) after INIT/SIPI", HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, NULL), 1);
	struct evtchn_status st;
	XEN_EXPECT("status(AP's ipi port).vcpu", xen_evtchn_status(port_ap, &st) ?: st.vcpu, 1);

	/* Ping-pong */
	XEN_EXPECT("send(AP's ipi port)", xen_evtchn_send(port_ap), 0);
	wait_ap(2, "no IPI from the BSP");
	XEN_CHECK(XEN_WAIT_UNTIL(xen_evtchn_count[pb] >= 1, xen_now() + XEN_MS(2000)), "no answer from the AP\n");
	printf("xen_ipi_smp: IPI 0 -> 1 and 1 -> 0 ok\n");
	XEN_EXPECT("bind_vcpu(ipi port, 1)", xen_evtchn_bind_vcpu(pb, 1), -XEN_EINVAL);
	XEN_EXPECT("bind_ipi(vcpu 2) with 2 vCPUs", xen_evtchn_bind_ipi(2, NULL), -XEN_ENOENT);

	/* bind_vcpu moves an interdomain port to the AP. */
	evtchn_port_t a, b;
	XEN_EXPECT("alloc_unbound(self)", xen_evtchn_alloc_unbound(DOMID_SELF, &a), 0);
	XEN_EXPECT("bind_interdomain(self, a)", xen_evtchn_bind_interdomain(DOMID_SELF, a, &b), 0);
	XEN_WAIT_UNTIL(xen_evtchn_count[b] >= 1, xen_now() + XEN_MS(500));	/* bind's own notification */
	uint32_t nb = xen_evtchn_count[b];
	XEN_EXPECT("bind_vcpu(b, 1)", xen_evtchn_bind_vcpu(b, 1), 0);
	XEN_EXPECT("status(b).vcpu", xen_evtchn_status(b, &st) ?: st.vcpu, 1);
	moved_base = nb;
	port_moved = b;
	XEN_EXPECT("send(a)", xen_evtchn_send(a), 0);
	wait_ap(3, "moved port not delivered on vCPU 1");
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(10));
	XEN_CHECK(xen_evtchn_count[b] == nb + 1, "port b delivered %u times\n",
		  xen_evtchn_count[b] - nb);
	printf("xen_ipi_smp: bind_vcpu(b, 1): the event arrived on vCPU 1 ok\n");

	/* A global VIRQ moved to vCPU 1 and closed can be bound again (evtchn_close finds it on
	 * vCPU 0, where global VIRQs live). */
	evtchn_port_t c;
	XEN_EXPECT("bind_virq(CONSOLE, 0)", xen_evtchn_bind_virq(VIRQ_CONSOLE, 0, &c), 0);
	XEN_EXPECT("bind_vcpu(console virq port, 1)", xen_evtchn_bind_vcpu(c, 1), 0);
	XEN_EXPECT("close(console virq port)", xen_evtchn_close(c), 0);
	XEN_EXPECT("bind_virq(CONSOLE, 0) again", xen_evtchn_bind_virq(VIRQ_CONSOLE, 0, &c), 0);
	XEN_EXPECT("close(console virq port) again", xen_evtchn_close(c), 0);

	/* Per-vCPU VIRQ_TIMER */
	wait_ap(4, "VIRQ_TIMER on vCPU 1");
	XEN_EXPECT("status(AP's timer port).vcpu", xen_evtchn_status(ap_timer_port, &st) ?: st.vcpu, 1);
	XEN_EXPECT("bind_virq(TIMER, 1) again", xen_evtchn_bind_virq(VIRQ_TIMER, 1, NULL), -XEN_EEXIST);
	evtchn_port_t t0;
	XEN_EXPECT("bind_virq(TIMER, 0)", xen_evtchn_bind_virq(VIRQ_TIMER, 0, &t0), 0);
	struct vcpu_set_singleshot_timer ss = { .timeout_abs_ns = xen_now() + XEN_MS(10) };
	XEN_EXPECT("set_singleshot_timer(vcpu 1) from vCPU 0",
		   HYPERVISOR_vcpu_op(VCPUOP_set_singleshot_timer, 1, &ss), -XEN_EINVAL);
	printf("xen_ipi_smp: VIRQ_TIMER bound and fired per vCPU ok\n");

	/* SCHEDOP_poll on vCPU 0, woken by the AP's send on a masked port. */
	cli();
	xen_evtchn_mask(pb);
	xen_evtchn_clear_pending(pb);
	uint64_t t = xen_now();
	ap_go_poll = 1;
	struct sched_poll poll = { .ports = (uintptr_t)&pb, .nr_ports = 1, .timeout = t + XEN_MS(3000) };
	XEN_EXPECT("poll([masked ipi], +3 s)", HYPERVISOR_sched_op(SCHEDOP_poll, &poll), 0);
	uint64_t el = xen_now() - t;
	XEN_CHECK(xen_evtchn_pending(pb) && el >= XEN_MS(10) && el < XEN_MS(1500),
		  "poll returned after %lu us, pending %d\n", el / 1000, xen_evtchn_pending(pb));
	printf("xen_ipi_smp: poll on vCPU 0 woken by vCPU 1 after %lu us ok\n", el / 1000);
	uint32_t n = xen_evtchn_count[pb];
	XEN_EXPECT("unmask(ipi)", xen_evtchn_unmask(pb), 0);
	XEN_CHECK(XEN_WAIT_UNTIL(xen_evtchn_count[pb] > n, xen_now() + XEN_MS(500)), "unmask did not deliver\n");

	/* VCPUOP_down stops the AP (is_up 0, no progress); VCPUOP_up resumes it (do_vcpu_op). */
	XEN_EXPECT("down(1)", HYPERVISOR_vcpu_op(VCPUOP_down, 1, NULL), 0);
	XEN_EXPECT("is_up(1) after down", HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, NULL), 0);
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(5));
	uint32_t ticks = ap_ticks;
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(30));
	XEN_CHECK(ap_ticks == ticks, "the AP ran %u heartbeats while down\n", ap_ticks - ticks);
	XEN_EXPECT("up(1)", HYPERVISOR_vcpu_op(VCPUOP_up, 1, NULL), 0);
	XEN_EXPECT("is_up(1) after up", HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, NULL), 1);
	XEN_CHECK(XEN_WAIT_UNTIL(ap_ticks > ticks, xen_now() + XEN_MS(1000)), "the AP did not resume\n");
	printf("xen_ipi_smp: VCPUOP_down held the AP, VCPUOP_up resumed it ok\n");
	XEN_CHECK(!ap_error, "AP error %d\n", ap_error);
	xen_pass();
}
