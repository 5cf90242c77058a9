/*
 * xen_pirq_smp (--cpus 2): EVTCHNOP_bind_vcpu moves a PIRQ's port and its deliveries
 * follow (event_channel.c evtchn_bind_vcpu, ECS_PIRQ: notify_vcpu_id = vcpu):
 *  - a level GSI (23) mapped and bound on vCPU 0, moved to vCPU 1: the assertion and
 *    the eoi re-send are taken by vCPU 1; status() reports vcpu 1;
 *  - an MSI pirq moved to vCPU 1 likewise; moved back to vCPU 0, vCPU 0 gets it.
 */
#include "xen.h"

#define AP_APIC 1
static volatile int ap_ready, ap_error;
static volatile uint32_t taken_by[2];		/* deliveries handled, per vCPU */
static volatile uint32_t last_cpu = ~0u;

static void ap_fail(int code) { ap_error = code; for (;;) { cli(); hlt(); } }

static void ap_main(void)
{
	xen_wait_init();
	if (xen_register_vcpu_info(xen_scratch_page(1), 64) != 0)
		ap_fail(1);
	xen_use_upcall_vector();
	__atomic_store_n(&ap_ready, 1, __ATOMIC_SEQ_CST);
	for (;;)
		XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(20));
}

static void on_event(evtchn_port_t port, void *arg)
{
	(void)port; (void)arg;
	unsigned cpu = lapic_id() & 1;
	taken_by[cpu]++;
	last_cpu = cpu;
}

static void expect_on(evtchn_port_t port, unsigned cpu, uint32_t before, const char *what)
{
	XEN_CHECK(XEN_WAIT_UNTIL(xen_evtchn_count[port] > before, xen_now() + XEN_MS(2000)),
		  "%s: nothing on port %u\n", what, port);
	XEN_EXPECT(what, last_cpu, cpu);
}

void kit_main(void)
{
	printf("xen_pirq_smp: PIRQ ports moved between 2 vCPUs\n");
	xen_test_start("xen_pirq_smp");
	XEN_EXPECT("register_vcpu_info(0)", xen_register_vcpu_info(xen_scratch_page(0), 0), 0);
	xen_use_upcall_vector();
	if (kit_start_ap(AP_APIC, ap_main) != 0)
		kit_fail("xen_pirq_smp: AP did not start");
	XEN_CHECK(XEN_WAIT_UNTIL(ap_ready || ap_error, xen_now() + XEN_MS(5000)) && !ap_error,
		  "AP setup (error %d)\n", ap_error);

	int g = -1;
	evtchn_port_t gp, mp;
	struct evtchn_status st;
	XEN_EXPECT("map_pirq(GSI 23)", xen_map_pirq_gsi(23, &g), 0);
	XEN_EXPECT("bind_pirq", xen_bind_pirq((uint32_t)g, 0, &gp), 0);
	xen_evtchn_set_handler(gp, on_event, NULL);
	uint32_t n = xen_evtchn_count[gp];
	testdev_set_gsi(23, 1);
	expect_on(gp, 0, n, "GSI 23 on vCPU 0: taken by vCPU");
	XEN_EXPECT("bind_vcpu(GSI pirq port, 1)", xen_evtchn_bind_vcpu(gp, 1), 0);
	XEN_EXPECT("status().vcpu", xen_evtchn_status(gp, &st) ?: st.vcpu, 1);
	n = xen_evtchn_count[gp];
	XEN_EXPECT("eoi (line still high)", xen_pirq_eoi((uint32_t)g), 0);
	expect_on(gp, 1, n, "re-sent level after bind_vcpu: taken by vCPU");
	testdev_set_gsi(23, 0);
	n = xen_evtchn_count[gp];
	testdev_set_gsi(23, 1);
	expect_on(gp, 1, n, "new assertion: taken by vCPU");
	testdev_set_gsi(23, 0);

	uint32_t m;
	XEN_EXPECT("get_free_pirq(MSI)", xen_get_free_pirq(MAP_PIRQ_TYPE_MSI, &m), 0);
	XEN_EXPECT("bind_pirq(MSI pirq)", xen_bind_pirq(m, 0, &mp), 0);
	xen_evtchn_set_handler(mp, on_event, NULL);
	XEN_EXPECT("bind_vcpu(MSI pirq port, 1)", xen_evtchn_bind_vcpu(mp, 1), 0);
	n = xen_evtchn_count[mp];
	testdev_send_msi(XEN_PIRQ_MSI_ADDR(m), XEN_PIRQ_MSI_DATA);
	expect_on(mp, 1, n, "MSI pirq moved to vCPU 1: taken by vCPU");
	XEN_EXPECT("bind_vcpu(MSI pirq port, 0)", xen_evtchn_bind_vcpu(mp, 0), 0);
	n = xen_evtchn_count[mp];
	testdev_send_msi(XEN_PIRQ_MSI_ADDR(m), XEN_PIRQ_MSI_DATA);
	expect_on(mp, 0, n, "MSI pirq moved back: taken by vCPU");
	printf("xen_pirq_smp: deliveries per vCPU: %u %u\n", taken_by[0], taken_by[1]);
	xen_pass();
}
