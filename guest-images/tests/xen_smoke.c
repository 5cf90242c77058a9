/*
 * xen_smoke: the shortest path through the Xen core — detect, hypercall
 * page, xen_version, shared_info, an IPI event channel sent to ourselves and
 * delivered through the per-vCPU upcall vector.  Run with `vmm run --xen`.
 */
#include "xen.h"

#define UPCALL_VECTOR 0xf3

static volatile int fired;

static void on_ipi(evtchn_port_t port, void *arg)
{
	(void)port; (void)arg;
	fired++;
}

void kit_main(void)
{
	evtchn_port_t port;
	xen_test_name = "xen_smoke";
	printf("xen_smoke: base %#x\n", xen_detect());
	xen_init();
	long v = xen_hypercall_raw(__HYPERVISOR_xen_version, XENVER_version, 0, 0, 0, 0);
	printf("xen_smoke: version %ld.%ld\n", v >> 16, v & 0xffff);
	KIT_ASSERT(v == ((4 << 16) | 17));
	xen_map_shared_info();
	lapic_enable();
	kit_set_handler(UPCALL_VECTOR, xen_upcall_isr_eoi);
	KIT_ASSERT(xen_set_upcall_vector(0, UPCALL_VECTOR) == 0);
	KIT_ASSERT(xen_evtchn_bind_ipi(0, &port) == 0);
	xen_evtchn_set_handler(port, on_ipi, 0);
	KIT_ASSERT(xen_evtchn_unmask(port) == 0);
	KIT_ASSERT(xen_evtchn_send(port) == 0);
	if (!KIT_WAIT_FOR(fired, 1000))
		kit_fail("IPI event not delivered");
	printf("xen_smoke: port %u delivered %d time(s)\n", port, fired);
	kit_pass();
}
