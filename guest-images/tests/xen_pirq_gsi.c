/*
 * xen_pirq_gsi: GSIs redirected to event channels (PHYSDEVOP_map_pirq GSI type,
 * EVTCHNOP_bind_pirq, PHYSDEVOP_eoi), driven by the testdev (+0xC: GSI | level << 31).
 *
 * Semantics encoded (Xen unless noted):
 *  - XENFEAT_hvm_pirqs is advertised (features.h);
 *  - map_pirq(GSI, pirq -1) allocates upwards from 16 (irq.c get_free_pirq: GSI type
 *    scans NR_ISA_IRQS..nr_irqs_gsi first); an explicit pirq is taken as given;
 *  - a mapped GSI no longer reaches the I/OAPIC; each rising edge sets the bound port
 *    pending (hvm/irq.c assert_gsi -> send_guest_pirq);
 *  - PHYSDEVOP_eoi re-sends a level GSI >= 16 that is still asserted, never an ISA one
 *    (physdev.c: "ISA irqs are edge triggered");
 *  - a level asserted before the bind arrives at the guest's first eoi (Linux's
 *    __startup_pirq: bind, unmask, eoi);
 *  - irq_status_query of a mapped pirq: XENIRQSTAT_needs_eoi; of an unmapped one -EINVAL;
 *  - unmap_pirq hands the line back to the I/OAPIC with its level, the port stays bound
 *    (status says pirq); close keeps the mapping; re-map with an explicit pirq + re-bind;
 *  - mapping a GSI that is already mapped to another pirq returns 0 and changes nothing
 *    (irq.c map_domain_emuirq_pirq: "already mapped" is a warning);
 *  - plain GSIs and MSIs still reach the LAPIC beside PIRQs.
 */
#include "xen.h"

#define V_GSI5	0x50	/* I/OAPIC vectors: must stay silent while their GSI is mapped */
#define V_GSI20	0x51
#define V_GSI22	0x52
#define V_MSI	0x53
#define QUIET_MS 30

static volatile uint32_t vcount[256];

static void count_isr(struct kit_frame *f)
{
	vcount[f->vector]++;
	if (f->vector == V_GSI20)
		testdev_set_gsi(20, 0);		/* a level source: drop the line before the EOI */
	lapic_eoi();
}

static bool arrived(evtchn_port_t p, uint32_t before)
{
	return XEN_WAIT_UNTIL(xen_evtchn_count[p] > before, xen_now() + XEN_MS(1000));
}

static void quiet(evtchn_port_t p, uint32_t before, const char *what)
{
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(QUIET_MS));
	XEN_CHECK(xen_evtchn_count[p] == before, "%s: port %u delivered (%u -> %u)\n", what, p, before,
		  xen_evtchn_count[p]);
}

static void once(evtchn_port_t p, uint32_t before, const char *what)
{
	XEN_CHECK(arrived(p, before), "%s: nothing on port %u\n", what, p);
	quiet(p, before + 1, what);
	printf("xen_pirq_gsi: %s: port %u delivered once ok\n", what, p);
}

static void no_vector(uint8_t v, const char *what)
{
	XEN_CHECK(vcount[v] == 0, "%s: the I/OAPIC delivered vector %#x %u times\n", what, v, vcount[v]);
}

void kit_main(void)
{
	printf("xen_pirq_gsi: GSIs mapped to PIRQs and event channels\n");
	xen_test_start("xen_pirq_gsi");
	xen_use_upcall_vector();
	XEN_CHECK(xen_features() & (1u << XENFEAT_hvm_pirqs), "XENFEAT_hvm_pirqs not advertised\n");
	for (unsigned v = V_GSI5; v <= V_MSI; v++)
		kit_set_handler(v, count_isr);
	uint32_t me = lapic_id(), flags, n;
	ioapic_route(5, V_GSI5, false, false, me, false);
	ioapic_route(20, V_GSI20, true, false, me, false);
	ioapic_route(21, V_GSI20, true, false, me, true);	/* masked: never seen */
	ioapic_route(22, V_GSI22, false, false, me, false);
	struct evtchn_status st;

	/* ---- Edge: ISA GSI 5 */
	int p5 = -1;
	XEN_EXPECT("map_pirq(GSI 5, pirq -1)", xen_map_pirq_gsi(5, &p5), 0);
	XEN_EXPECT("allocated pirq (first GSI-type pirq: 16)", p5, 16);
	XEN_EXPECT("irq_status_query(16)", xen_pirq_status(16, &flags), 0);
	XEN_EXPECT("irq_status_query(16).flags", flags, XENIRQSTAT_needs_eoi);
	evtchn_port_t e5;
	XEN_EXPECT("bind_pirq(16)", xen_bind_pirq(16, 0, &e5), 0);
	XEN_EXPECT("status(port).status", xen_evtchn_status(e5, &st) ?: st.status, EVTCHNSTAT_pirq);
	XEN_CHECK(st.u.pirq == 16 && st.vcpu == 0, "status: pirq %u vcpu %u\n", st.u.pirq, st.vcpu);
	XEN_EXPECT("eoi(16)", xen_pirq_eoi(16), 0);
	n = xen_evtchn_count[e5];
	testdev_set_gsi(5, 1);
	once(e5, n, "GSI 5 rising edge");
	n = xen_evtchn_count[e5];
	XEN_EXPECT("eoi(16) with GSI 5 still high", xen_pirq_eoi(16), 0);
	quiet(e5, n, "eoi of an ISA GSI (edge: no re-send)");
	testdev_set_gsi(5, 0);
	quiet(e5, n, "GSI 5 falling edge");
	testdev_set_gsi(5, 1);
	once(e5, n, "GSI 5 second rising edge");
	testdev_set_gsi(5, 0);
	no_vector(V_GSI5, "mapped GSI 5");

	/* ---- Level: GSI 20 (PCI INTx uses 16..19) */
	int p20 = -1;
	XEN_EXPECT("map_pirq(GSI 20, pirq -1)", xen_map_pirq_gsi(20, &p20), 0);
	XEN_EXPECT("allocated pirq", p20, 17);
	evtchn_port_t e20;
	XEN_EXPECT("bind_pirq(17, WILL_SHARE)", xen_bind_pirq(17, BIND_PIRQ__WILL_SHARE, &e20), 0);
	n = xen_evtchn_count[e20];
	testdev_set_gsi(20, 1);
	once(e20, n, "GSI 20 asserted");
	n = xen_evtchn_count[e20];
	XEN_EXPECT("eoi(17) while GSI 20 is high", xen_pirq_eoi(17), 0);
	once(e20, n, "level re-sent after eoi");
	n = xen_evtchn_count[e20];
	XEN_EXPECT("eoi(17) again", xen_pirq_eoi(17), 0);
	once(e20, n, "level re-sent after the second eoi");
	testdev_set_gsi(20, 0);
	n = xen_evtchn_count[e20];
	XEN_EXPECT("eoi(17) after the line dropped", xen_pirq_eoi(17), 0);
	quiet(e20, n, "eoi of a deasserted level GSI");
	no_vector(V_GSI20, "mapped GSI 20");

	/* ---- Asserted before the bind: arrives at bind + unmask + eoi (Linux's order) */
	testdev_set_gsi(21, 1);
	int p21 = -1;
	XEN_EXPECT("map_pirq(GSI 21 already high)", xen_map_pirq_gsi(21, &p21), 0);
	XEN_EXPECT("allocated pirq", p21, 18);
	evtchn_port_t e21;
	XEN_EXPECT("bind_pirq(18)", xen_bind_pirq(18, 0, &e21), 0);
	n = xen_evtchn_count[e21];
	quiet(e21, n, "map + bind of a high line (Xen sends nothing then)");
	XEN_EXPECT("unmask(port)", xen_evtchn_unmask(e21), 0);
	XEN_EXPECT("eoi(18)", xen_pirq_eoi(18), 0);
	once(e21, n, "level asserted before the bind, at the first eoi");
	testdev_set_gsi(21, 0);

	/* ---- Plain GSI and MSI beside the PIRQs */
	testdev_set_gsi(22, 1);
	testdev_set_gsi(22, 0);
	XEN_CHECK(KIT_WAIT_FOR(vcount[V_GSI22] == 1, 1000), "GSI 22 (not mapped) -> I/OAPIC: %u\n",
		  vcount[V_GSI22]);
	testdev_send_msi(KIT_MSI_ADDR(me), V_MSI);
	XEN_CHECK(KIT_WAIT_FOR(vcount[V_MSI] == 1, 1000), "plain MSI -> LAPIC: %u\n", vcount[V_MSI]);
	printf("xen_pirq_gsi: an unmapped GSI and a plain MSI reach the LAPIC ok\n");

	/* ---- Mapping a mapped GSI to another pirq: 0, nothing changes */
	int other = 40;
	XEN_EXPECT("map_pirq(GSI 5, pirq 40) while GSI 5 -> 16", xen_map_pirq_gsi(5, &other), 0);
	XEN_EXPECT("irq_status_query(40) (not mapped)", xen_pirq_status(40, NULL), -XEN_EINVAL);
	other = 16;
	XEN_EXPECT("map_pirq(GSI 22, pirq 16) while 16 -> GSI 5", xen_map_pirq_gsi(22, &other), 0);
	testdev_set_gsi(22, 1);
	testdev_set_gsi(22, 0);
	XEN_CHECK(KIT_WAIT_FOR(vcount[V_GSI22] == 2, 1000), "GSI 22 was taken by pirq 16\n");
	other = 16;
	XEN_EXPECT("map_pirq(GSI 5, pirq 16) again (same mapping)", xen_map_pirq_gsi(5, &other), 0);

	/* ---- Unmap: the line goes back to the I/OAPIC, the port stays bound */
	XEN_EXPECT("unmap_pirq(16)", xen_unmap_pirq(16), 0);
	XEN_EXPECT("irq_status_query(16) after unmap", xen_pirq_status(16, NULL), -XEN_EINVAL);
	XEN_EXPECT("eoi(16) after unmap (still bound: the pirq exists)", xen_pirq_eoi(16), 0);
	XEN_EXPECT("status(port of 16).u.pirq", xen_evtchn_status(e5, &st) ?: st.u.pirq, 16);
	n = xen_evtchn_count[e5];
	testdev_set_gsi(5, 1);
	testdev_set_gsi(5, 0);
	XEN_CHECK(KIT_WAIT_FOR(vcount[V_GSI5] == 1, 1000), "unmapped GSI 5 -> I/OAPIC: %u\n", vcount[V_GSI5]);
	quiet(e5, n, "unmapped GSI 5");
	printf("xen_pirq_gsi: unmapped GSI 5 is the I/OAPIC's again ok\n");
	XEN_EXPECT("unmap_pirq(16) again", xen_unmap_pirq(16), 0);
	XEN_EXPECT("close(port of 16)", xen_evtchn_close(e5), 0);
	XEN_EXPECT("eoi(16) unmapped and closed (no pirq left)", xen_pirq_eoi(16), -XEN_EINVAL);
	/* re-map with an explicit pirq and bind again */
	int p40 = 40;
	XEN_EXPECT("map_pirq(GSI 5, pirq 40)", xen_map_pirq_gsi(5, &p40), 0);
	XEN_EXPECT("map_pirq: pirq as given", p40, 40);
	evtchn_port_t e40;
	XEN_EXPECT("bind_pirq(40)", xen_bind_pirq(40, 0, &e40), 0);
	n = xen_evtchn_count[e40];
	testdev_set_gsi(5, 1);
	once(e40, n, "GSI 5 re-mapped to pirq 40");
	testdev_set_gsi(5, 0);
	XEN_CHECK(vcount[V_GSI5] == 1, "re-mapped GSI 5 reached the I/OAPIC\n");

	/* close keeps the mapping: the line stays diverted, nothing is delivered */
	XEN_EXPECT("close(port of 40)", xen_evtchn_close(e40), 0);
	XEN_EXPECT("irq_status_query(40) after close", xen_pirq_status(40, &flags), 0);
	testdev_set_gsi(5, 1);
	testdev_set_gsi(5, 0);
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(QUIET_MS));
	XEN_CHECK(vcount[V_GSI5] == 1, "GSI 5 mapped but unbound reached the I/OAPIC\n");
	printf("xen_pirq_gsi: close kept the mapping (GSI still diverted, dropped) ok\n");
	XEN_EXPECT("bind_pirq(40) again", xen_bind_pirq(40, 0, &e40), 0);
	n = xen_evtchn_count[e40];
	testdev_set_gsi(5, 1);
	once(e40, n, "re-bound pirq 40");
	testdev_set_gsi(5, 0);

	/* unmap of a level GSI while asserted: the I/OAPIC gets the level */
	n = xen_evtchn_count[e20];
	testdev_set_gsi(20, 1);
	once(e20, n, "GSI 20 asserted again");
	XEN_EXPECT("unmap_pirq(17) while GSI 20 is high", xen_unmap_pirq(17), 0);
	XEN_CHECK(KIT_WAIT_FOR(vcount[V_GSI20] == 1, 1000), "GSI 20 handed back high: I/OAPIC %u\n",
		  vcount[V_GSI20]);
	printf("xen_pirq_gsi: unmap handed the high level GSI 20 to the I/OAPIC ok\n");
	xen_pass();
}
