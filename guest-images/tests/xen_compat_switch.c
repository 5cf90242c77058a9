/*
 * xen_compat_switch: a 64-bit guest binds ports above 1024, then latches the
 * compat shared_info layout (XENMEM_add_to_physmap(shared_info) from 32-bit
 * mode: xen/arch/x86/hvm/hvm.c hvm_latch_shinfo_size, which converts nothing).
 * The compat bitmaps are 32 words of 32 bits: 1024 ports.  What Xen does with
 * the ports beyond (xen/common/event_2l.c, event_channel.c):
 *  - they stay valid (port_is_valid checks d->valid_evtchns, which never
 *    shrinks): status, send *from* them, unmask and close answer as before;
 *  - no new port is allocated there (evtchn_allocate_port: port >=
 *    max_evtchns(d) = 32*32 -> -ENOSPC);
 *  - they are masked and never pending (evtchn_2l_is_masked/is_pending:
 *    port >= max_ports): a send whose peer is one of them returns 0 and
 *    delivers nothing, and no bit of the compat bitmaps moves (all or
 *    nothing); the same for a VIRQ_TIMER bound there.
 * Compat offsets (public/xen.h under the 32-bit ABI, xen_ulong_t = 4 bytes):
 * shared_info.evtchn_pending at 2048, evtchn_mask at 2048 + 128; vcpu_info
 * is 64 bytes, evtchn_pending_sel at 4 (time stays at 32, so xen_now() works).
 */
#include "xen.h"

#define NAME "xen_compat_switch"
#define P32(p) ((uint32_t)(uintptr_t)(p))
#define HIGH 1030		/* ports allocated: 1..HIGH */

struct compat_add_to_physmap {
	uint16_t domid, size;
	uint32_t space;
	uint32_t idx;
	uint32_t gpfn;
};
_Static_assert(sizeof(struct compat_add_to_physmap) == 16, "compat xen_add_to_physmap");

static struct compat_add_to_physmap catp;
static uint8_t snapshot[1024];

static volatile uint32_t *pending32(void) { return (volatile uint32_t *)((char *)xen_shared_info + 2048); }
static volatile uint32_t *mask32(void) { return (volatile uint32_t *)((char *)xen_shared_info + 2048 + 128); }
static volatile uint32_t *sel32(void) { return (volatile uint32_t *)((char *)xen_shared_info + 4); }

/* The whole 64-bit evtchn area (pending + mask, 1 KiB) must read as SNAPSHOT. */
static void bitmaps_unchanged(const char *what)
{
	const volatile uint8_t *a = (const volatile uint8_t *)xen_shared_info + 2048;
	for (int i = 0; i < 1024; i++)
		if (a[i] != snapshot[i])
			kit_fail(NAME ": %s: shared_info byte %d changed %#x -> %#x", what, 2048 + i, snapshot[i], a[i]);
	XEN_CHECK(*sel32() == 0, "%s: pending_sel %#x\n", what, *sel32());
	printf(NAME ": %s: no bit moved ok\n", what);
}

void kit_main(void)
{
	printf(NAME ": ports above 1024 after the switch to the compat shared_info layout\n");
	xen_test_start(NAME);

	/* 64-bit layout: ports 1..1027 unbound, then a loopback pair (1 <-> 1028: port 1 is
	 * closed and reused) and VIRQ_TIMER on 1029. */
	evtchn_port_t p, peer = 0, local, timer;
	/* The toolstack's ports (PV console, xenstore) go first: the numbering below starts at 1. */
	struct evtchn_reset rs = { .dom = DOMID_SELF };
	XEN_EXPECT("reset(self)", HYPERVISOR_event_channel_op(EVTCHNOP_reset, &rs), 0);
	for (int i = 1; i <= HIGH - 3; i++) {
		long rc = xen_evtchn_alloc_unbound(DOMID_SELF, &p);
		if (rc || p != (evtchn_port_t)i)
			kit_fail(NAME ": alloc_unbound = %ld, port %u, want 0, %d", rc, p, i);
	}
	XEN_EXPECT("alloc_unbound (high)", xen_evtchn_alloc_unbound(DOMID_SELF, &peer), 0);
	XEN_EXPECT("  port", peer, HIGH - 2);
	XEN_EXPECT("close(1)", xen_evtchn_close(1), 0);
	XEN_EXPECT("bind_interdomain(high)", xen_evtchn_bind_interdomain(DOMID_SELF, peer, &local), 0);
	XEN_EXPECT("  local port", local, 1);
	XEN_EXPECT("bind_virq(TIMER, 0)", xen_evtchn_bind_virq(VIRQ_TIMER, 0, &timer), 0);
	XEN_EXPECT("  port", timer, HIGH - 1);

	/* Latch the compat layout: the same page again, from 32-bit mode. */
	catp.domid = DOMID_SELF;
	catp.space = XENMAPSPACE_shared_info;
	catp.idx = 0;
	catp.gpfn = P32(xen_shared_info) >> 12;
	XEN_EXPECT("compat add_to_physmap(shared_info)", xen_compat_hypercall(__HYPERVISOR_memory_op,
		   XENMEM_add_to_physmap, P32(&catp), 0, 0, 0), 0);
	memset((void *)((char *)xen_shared_info + 2048), 0, 1024);
	*sel32() = 0;
	((volatile uint8_t *)xen_shared_info)[0] = 0;	/* vcpu_info[0].evtchn_upcall_pending */
	memset(snapshot, 0, sizeof(snapshot));

	/* A send whose peer is beyond the compat bitmaps: 0, and nothing at all. */
	XEN_EXPECT("send(1) -> peer beyond 1024", xen_evtchn_send(1), 0);
	bitmaps_unchanged("send to a port beyond 1024");

	/* VIRQ_TIMER bound beyond 1024: the timer fires, nothing is delivered, the VMM keeps going. */
	XEN_EXPECT("set_singleshot(+1 ms)", xen_set_singleshot(xen_now() + XEN_MS(1), 0), 0);
	xen_spin_until(xen_now() + XEN_MS(30));
	bitmaps_unchanged("VIRQ_TIMER beyond 1024");

	/* The high ports are still valid. */
	struct evtchn_status st;
	XEN_EXPECT("status(high)", xen_evtchn_status(peer, &st), 0);
	XEN_EXPECT("  .status", st.status, EVTCHNSTAT_interdomain);
	XEN_EXPECT("  .u.interdomain.port", st.u.interdomain.port, 1);
	XEN_EXPECT("unmask(high)", xen_evtchn_unmask(peer), 0);
	bitmaps_unchanged("unmask of a port beyond 1024");

	/* ... and a send from one reaches its peer below 1024: port 1 pending, selector word 0. */
	XEN_EXPECT("send(high) -> port 1", xen_evtchn_send(peer), 0);
	XEN_CHECK(pending32()[0] == 1u << 1, "compat pending word 0 = %#x, want port 1's bit\n", pending32()[0]);
	XEN_CHECK(*sel32() == 1, "pending_sel %#x, want word 0\n", *sel32());
	XEN_CHECK(mask32()[0] == 0, "mask word 0 = %#x\n", mask32()[0]);
	printf(NAME ": send from beyond 1024 delivered to port 1 ok\n");

	/* No allocation beyond the compat limit: 1..1023 are taken. */
	XEN_EXPECT("alloc_unbound (compat layout, 1..1023 taken)", xen_evtchn_alloc_unbound(DOMID_SELF, &p),
		   -XEN_ENOSPC);
	XEN_EXPECT("close(timer)", xen_evtchn_close(timer), 0);
	XEN_EXPECT("close(high)", xen_evtchn_close(peer), 0);
	XEN_EXPECT("close(5)", xen_evtchn_close(5), 0);
	XEN_EXPECT("alloc_unbound (port 5 free again)", xen_evtchn_alloc_unbound(DOMID_SELF, &p), 0);
	XEN_EXPECT("  port", p, 5);
	xen_pass();
}
