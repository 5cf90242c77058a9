/*
 * xen_pirq_msi: MSIs that name a PIRQ (vector 0; Linux's XEN_PIRQ_MSI_DATA, the pirq in
 * the address) arrive on the PIRQ's event channel.  The testdev (+0/+4/+8) sends them.
 *
 * Semantics encoded (xen/arch/x86/hvm/irq.c hvm_inject_msi unless noted):
 *  - Linux's order: get_free_pirq(MSI) (downwards from the top: 255), bind, then MSIs;
 *  - the first MSI maps the pirq for MSI emulation: irq_status_query then answers 0 without
 *    XENIRQSTAT_needs_eoi (our one deviation from physdev.c: see xen/pirq.py); eoi of an MSI pirq
 *    re-sends nothing;
 *  - a masked port gets pending and no upcall, EVTCHNOP_unmask delivers it;
 *  - pirq 0 (-ERANGE), a pirq >= nr_pirqs (-EINVAL) and a pirq mapped to a GSI (-EINVAL)
 *    are dropped: vector 0 never reaches a LAPIC;
 *  - only one pirq is recorded as mapped for MSI emulation at a time (irq.c
 *    map_domain_emuirq_pirq keys the reverse tree by IRQ_MSI_EMU too): a second bound
 *    MSI pirq still gets its MSIs but irq_status_query says -EINVAL for it;
 *  - unmap_pirq of the MSI pirq: status -EINVAL, the next MSI maps it again;
 *  - an ordinary MSI still reaches the LAPIC.
 */
#include "xen.h"

#define V_MSI 0x55
#define QUIET_MS 30

static volatile uint32_t vcount[256];

static void count_isr(struct kit_frame *f)
{
	vcount[f->vector]++;
	lapic_eoi();
}

static void send_pirq_msi(uint32_t pirq) { testdev_send_msi(XEN_PIRQ_MSI_ADDR(pirq), XEN_PIRQ_MSI_DATA); }

static void quiet_all(const uint32_t *before, const char *what)
{
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(QUIET_MS));
	for (unsigned p = 1; p < 16; p++)
		XEN_CHECK(xen_evtchn_count[p] == before[p], "%s: port %u delivered\n", what, p);
	for (unsigned v = 0; v < 256; v++)
		XEN_CHECK(vcount[v] == 0 || v == V_MSI, "%s: LAPIC vector %#x\n", what, v);
}

static void once(evtchn_port_t p, uint32_t before, const char *what)
{
	XEN_CHECK(XEN_WAIT_UNTIL(xen_evtchn_count[p] > before, xen_now() + XEN_MS(1000)),
		  "%s: nothing on port %u\n", what, p);
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(QUIET_MS));
	XEN_CHECK(xen_evtchn_count[p] == before + 1, "%s: port %u delivered %u times\n", what, p,
		  xen_evtchn_count[p] - before);
	printf("xen_pirq_msi: %s: port %u delivered once ok\n", what, p);
}

void kit_main(void)
{
	printf("xen_pirq_msi: PIRQ-encoded MSIs to event channels\n");
	xen_test_start("xen_pirq_msi");
	xen_use_upcall_vector();
	kit_set_handler(V_MSI, count_isr);
	uint32_t pirq, q, flags, n, snap[16];
	evtchn_port_t port, qport;

	XEN_EXPECT("get_free_pirq(MSI)", xen_get_free_pirq(MAP_PIRQ_TYPE_MSI, &pirq), 0);
	XEN_EXPECT("pirq", pirq, 255);
	XEN_EXPECT("irq_status_query before any MSI (not mapped)", xen_pirq_status(pirq, NULL), -XEN_EINVAL);
	XEN_EXPECT("bind_pirq(255)", xen_bind_pirq(pirq, 0, &port), 0);
	n = xen_evtchn_count[port];
	send_pirq_msi(pirq);
	once(port, n, "MSI naming pirq 255");
	XEN_EXPECT("irq_status_query(255) after the MSI", xen_pirq_status(pirq, &flags), 0);
	XEN_EXPECT("flags (an emulated MSI needs no EOI)", flags, 0);
	n = xen_evtchn_count[port];
	XEN_EXPECT("eoi(255)", xen_pirq_eoi(pirq), 0);
	memcpy(snap, (const void *)xen_evtchn_count, sizeof(snap));
	quiet_all(snap, "eoi of an MSI pirq");
	send_pirq_msi(pirq);
	once(port, n, "second MSI");

	/* masked port */
	xen_evtchn_mask(port);
	n = xen_evtchn_count[port];
	send_pirq_msi(pirq);
	XEN_WAIT_UNTIL(xen_evtchn_pending(port), xen_now() + XEN_MS(1000));
	XEN_CHECK(xen_evtchn_pending(port), "masked port not pending\n");
	XEN_CHECK(xen_evtchn_count[port] == n, "masked port delivered\n");
	XEN_EXPECT("unmask", xen_evtchn_unmask(port), 0);
	once(port, n, "MSI held by the mask, delivered by EVTCHNOP_unmask");

	/* dropped messages */
	memcpy(snap, (const void *)xen_evtchn_count, sizeof(snap));
	send_pirq_msi(0);
	send_pirq_msi(256);
	send_pirq_msi(0x12345);
	testdev_send_msi(0xfee00000u, 0);		/* vector 0, pirq 0 */
	int g = -1;
	XEN_EXPECT("map_pirq(GSI 22)", xen_map_pirq_gsi(22, &g), 0);
	evtchn_port_t gport;
	XEN_EXPECT("bind_pirq(GSI pirq)", xen_bind_pirq((uint32_t)g, 0, &gport), 0);
	snap[gport] = xen_evtchn_count[gport];
	send_pirq_msi((uint32_t)g);
	quiet_all(snap, "MSIs naming pirq 0, 256, 0x12345 and a GSI pirq");
	printf("xen_pirq_msi: MSIs for pirq 0, out-of-range pirqs and a GSI pirq dropped ok\n");

	/* a second MSI pirq */
	XEN_EXPECT("get_free_pirq(MSI) again", xen_get_free_pirq(MAP_PIRQ_TYPE_MSI, &q), 0);
	XEN_EXPECT("pirq", q, 254);
	XEN_EXPECT("bind_pirq(254)", xen_bind_pirq(q, 0, &qport), 0);
	n = xen_evtchn_count[qport];
	send_pirq_msi(q);
	once(qport, n, "MSI naming pirq 254");
	XEN_EXPECT("irq_status_query(254) (Xen records one MSI-emulation pirq)", xen_pirq_status(q, NULL),
		   -XEN_EINVAL);

	/* unmap the MSI pirq: the next MSI maps it again; the port stays bound */
	XEN_EXPECT("unmap_pirq(255)", xen_unmap_pirq(pirq), 0);
	XEN_EXPECT("irq_status_query(255) after unmap", xen_pirq_status(pirq, NULL), -XEN_EINVAL);
	n = xen_evtchn_count[port];
	send_pirq_msi(pirq);
	once(port, n, "MSI after unmap");
	XEN_EXPECT("irq_status_query(255) mapped again", xen_pirq_status(pirq, NULL), 0);

	/* close: the MSI goes nowhere; an unbound pirq's MSI too */
	XEN_EXPECT("close(port of 255)", xen_evtchn_close(port), 0);
	memcpy(snap, (const void *)xen_evtchn_count, sizeof(snap));
	send_pirq_msi(pirq);
	send_pirq_msi(100);
	quiet_all(snap, "MSI to a closed pirq port / an unbound pirq");

	/* ordinary MSI beside the PIRQs */
	testdev_send_msi(KIT_MSI_ADDR(lapic_id()), V_MSI);
	XEN_CHECK(KIT_WAIT_FOR(vcount[V_MSI] == 1, 1000), "plain MSI -> LAPIC: %u\n", vcount[V_MSI]);
	printf("xen_pirq_msi: a plain MSI reaches the LAPIC ok\n");
	xen_pass();
}
