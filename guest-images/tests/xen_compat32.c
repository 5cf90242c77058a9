/*
 * xen_compat32: hypercalls made from 32-bit compatibility mode (a code
 * segment with L=0 D=1 in the 64-bit GDT) use Xen's 32-bit ABI: number in
 * EAX, arguments in EBX ECX EDX ESI EDI, result in EAX, and the compat
 * structure layouts (xen/arch/x86/hvm/hypercall.c hvm_hypercall: mode 4 ->
 * call_handlers_hvm32 with hcall_compat; xen/common/compat/memory.c, schedule.c).
 *  - xen_version: same answers as from 64-bit mode;
 *  - SCHEDOP_poll with struct compat_sched_poll (4-byte handle, nr_ports at
 *    4, timeout at 8 - the 64-bit layout has them at 8 and 16);
 *  - XENMEM_add_to_physmap with the 16-byte compat struct (32-bit idx and
 *    gpfn; 24 bytes in 64-bit mode);
 *  - EVTCHNOP_status and HVMOP_get_param (same layout in both modes).
 * shared_info stays in the 64-bit layout: it was set up from 64-bit mode and
 * no CALLBACK_IRQ is written from compat mode (hvm.c hvm_latch_shinfo_size).
 */
#include "xen.h"

#define NAME "xen_compat32"
#define P32(p) ((uint32_t)(uintptr_t)(p))

struct compat_add_to_physmap {
	uint16_t domid, size;
	uint32_t space;
	uint32_t idx;
	uint32_t gpfn;
};
_Static_assert(sizeof(struct compat_add_to_physmap) == 16, "compat xen_add_to_physmap");

static struct compat_sched_poll cpoll;
static struct compat_add_to_physmap catp;
static evtchn_port_t ports[1];

void kit_main(void)
{
	printf(NAME ": hypercalls from 32-bit compatibility mode\n");
	xen_test_start(NAME);

	long v64 = HYPERVISOR_xen_version(XENVER_version, NULL);
	XEN_EXPECT("compat xen_version(XENVER_version)", xen_compat_hypercall(__HYPERVISOR_xen_version,
		   XENVER_version, 0, 0, 0, 0), v64);
	static char e64[16], e32[16];
	XEN_EXPECT("xen_version(extraversion)", HYPERVISOR_xen_version(XENVER_extraversion, e64), 0);
	XEN_EXPECT("compat xen_version(extraversion)", xen_compat_hypercall(__HYPERVISOR_xen_version,
		   XENVER_extraversion, P32(e32), 0, 0, 0), 0);
	XEN_CHECK(!memcmp(e64, e32, 16), "extraversion differs: \"%s\" vs \"%s\"\n", e64, e32);
	XEN_EXPECT("compat xen_version(99)", xen_compat_hypercall(__HYPERVISOR_xen_version, 99, 0, 0, 0, 0),
		   -XEN_ENOSYS);

	/* evtchn: same layout */
	evtchn_port_t p;
	XEN_EXPECT("bind_ipi(0) (64-bit)", xen_evtchn_bind_ipi(0, &p), 0);
	static struct evtchn_status st;
	st.dom = DOMID_SELF;
	st.port = p;
	XEN_EXPECT("compat evtchn status", xen_compat_hypercall(__HYPERVISOR_event_channel_op, EVTCHNOP_status,
		   P32(&st), 0, 0, 0), 0);
	XEN_EXPECT("  .status", st.status, EVTCHNSTAT_ipi);

	/* sched_poll, compat layout: a pending (masked) port returns at once ... */
	xen_evtchn_mask(p);
	XEN_EXPECT("send(ipi) (masked)", xen_evtchn_send(p), 0);
	ports[0] = p;
	cpoll.ports = P32(ports);
	cpoll.nr_ports = 1;
	cpoll.timeout_lo = cpoll.timeout_hi = 0;
	XEN_EXPECT("compat poll([pending port], no timeout)", xen_compat_hypercall(__HYPERVISOR_sched_op,
		   SCHEDOP_poll, P32(&cpoll), 0, 0, 0), 0);
	xen_evtchn_clear_pending(p);
	/* ... and an idle one times out at the absolute time given at offset 8. */
	uint64_t t = xen_now(), dl = t + XEN_MS(20);
	cpoll.timeout_lo = (uint32_t)dl;
	cpoll.timeout_hi = (uint32_t)(dl >> 32);
	XEN_EXPECT("compat poll([idle port], +20 ms)", xen_compat_hypercall(__HYPERVISOR_sched_op, SCHEDOP_poll,
		   P32(&cpoll), 0, 0, 0), 0);
	uint64_t el = xen_now() - t;
	XEN_CHECK(el >= XEN_MS(20) && el < XEN_MS(1000), "compat poll returned after %lu us\n", el / 1000);
	printf(NAME ": compat sched_poll timed out after %lu us ok\n", el / 1000);
	cpoll.nr_ports = 129;
	XEN_EXPECT("compat poll(nr_ports 129)", xen_compat_hypercall(__HYPERVISOR_sched_op, SCHEDOP_poll,
		   P32(&cpoll), 0, 0, 0), -XEN_EINVAL);

	/* add_to_physmap, compat layout: map grant frame 0 over a RAM page. */
	uint64_t *g = xen_scratch_page(0);
	for (int i = 0; i < 512; i++)
		g[i] = 0x5a5a5a5a5a5a5a5aULL;
	catp.domid = DOMID_SELF;
	catp.space = XENMAPSPACE_grant_table;
	catp.idx = 0;
	catp.gpfn = P32(g) >> 12;
	XEN_EXPECT("compat add_to_physmap(grant_table, 0)", xen_compat_hypercall(__HYPERVISOR_memory_op,
		   XENMEM_add_to_physmap, P32(&catp), 0, 0, 0), 0);
	XEN_CHECK(((volatile uint64_t *)g)[0] != 0x5a5a5a5a5a5a5a5aULL, "gpfn still shows RAM\n");
	printf(NAME ": compat add_to_physmap mapped the grant frame at gpfn %#x ok\n", catp.gpfn);

	/* hvm_op get_param: same layout, same value as a 64-bit caller reads */
	uint64_t store_evtchn = 0;
	XEN_EXPECT("get_param(STORE_EVTCHN) (64-bit)", xen_hvm_get_param(HVM_PARAM_STORE_EVTCHN, &store_evtchn), 0);
	XEN_CHECK(store_evtchn != 0, "no xenstore port\n");
	static struct xen_hvm_param hp;
	hp.domid = DOMID_SELF;
	hp.index = HVM_PARAM_STORE_EVTCHN;
	hp.value = 0xdead;
	XEN_EXPECT("compat hvm_op(get_param STORE_EVTCHN)", xen_compat_hypercall(__HYPERVISOR_hvm_op,
		   HVMOP_get_param, P32(&hp), 0, 0, 0), 0);
	XEN_EXPECT("  .value", hp.value, store_evtchn);

	/* Back in 64-bit mode, everything still works. */
	XEN_EXPECT("xen_version(XENVER_version) (64-bit again)", HYPERVISOR_xen_version(XENVER_version, NULL), v64);
	xen_pass();
}
