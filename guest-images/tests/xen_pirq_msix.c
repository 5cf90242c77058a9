/*
 * xen_pirq_msix (--pci-testdev): MSI and MSI-X PIRQs through the real PCI path.  The PCI
 * test device (devices/pci_testdev.py) sends what its capabilities hold when the guest
 * writes FIRE; vectors are programmed the way Linux's arch/x86/pci/xen.c does for an HVM
 * guest with XENFEAT_hvm_pirqs: get_free_pirq(MSI), the PIRQ-encoded message (vector 0,
 * xen_msi_compose_msg) written while the vector is masked, then bind_pirq.
 *
 * Semantics encoded:
 *  - bind_pirq unmasks the vector carrying the PIRQ (Xen: irq.c arch_evtchn_bind_pirq ->
 *    guest_mask_msi_irq(desc, 0); QEMU does the same for emulated devices), so a message
 *    pended before the bind arrives once, right after it;
 *  - each FIRE while bound and unmasked is one event on the port (waited for before the
 *    next: edges coalesce in an event channel);
 *  - a masked MSI vector / MSI-X entry / function mask holds messages back: no event,
 *    the pending (PBA) bit set; unmasking sends one message (PCI 3.0 §6.8.3.3, §6.8.2.10);
 *  - re-programming an entry with another PIRQ moves delivery to that PIRQ's port;
 *  - close: the messages are dropped (send_guest_pirq finds no port), the mapping stays
 *    (irq_status_query unchanged) and a re-bind delivers again;
 *  - a plain MSI-X entry to a LAPIC vector and a plain GSI via the I/OAPIC keep working;
 *  - the device's counters agree with the guest's: SENT_* / PENDED_* as fired, none dropped.
 */
#include "xen.h"
#include "pci_testdev.h"

#define V_PLAIN 0x66
#define V_INTX 0x67
#define GSI_INTX 21		/* a legacy-testdev line, edge, to the I/OAPIC (never mapped) */
#define QUIET_MS 30

static struct testdev td;
static volatile uint32_t vcount[256];
static uint32_t sent_msi, pended_msi, sent_msix, pended_msix;	/* what the device must count */
static uint32_t want[XEN_KIT_MAX_PORTS];			/* events each port must have had */

static void count_isr(struct kit_frame *f)
{
	vcount[f->vector]++;
	lapic_eoi();
}

static void quiet(void) { XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(QUIET_MS)); }

/* Every port and the LAPIC vectors have exactly what we expect. */
static void check_all(const char *what)
{
	quiet();
	for (unsigned p = 1; p < 32; p++)
		XEN_CHECK(xen_evtchn_count[p] == want[p], "%s: port %u: %u events, want %u\n", what, p,
			  xen_evtchn_count[p], want[p]);
}

static void fire(int target, bool msix, bool pends)
{
	td_write(&td, TD_FIRE, (uint32_t)target | (msix ? TD_TARGET_MSIX : 0));
	if (msix)
		*(pends ? &pended_msix : &sent_msix) += 1;
	else
		*(pends ? &pended_msi : &sent_msi) += 1;
}

/* One FIRE of a bound, unmasked PIRQ vector: exactly one event on PORT. */
static void fire_once(int target, bool msix, evtchn_port_t port, const char *what)
{
	uint32_t n = xen_evtchn_count[port];
	fire(target, msix, false);
	XEN_CHECK(XEN_WAIT_UNTIL(xen_evtchn_count[port] > n, xen_now() + XEN_MS(2000)),
		  "%s: nothing on port %u\n", what, port);
	want[port]++;
	check_all(what);
}

/* A message held back until now (unmask): PORT gets exactly one event. */
static void expect_one(evtchn_port_t port, const char *what)
{
	XEN_CHECK(XEN_WAIT_UNTIL(xen_evtchn_count[port] > want[port], xen_now() + XEN_MS(2000)),
		  "%s: nothing on port %u\n", what, port);
	want[port]++;
	check_all(what);
	printf("xen_pirq_msix: %s: port %u once ok\n", what, port);
}

static void plain_once(const char *what)
{
	uint32_t n = vcount[V_PLAIN];
	fire(2, true, false);
	XEN_CHECK(XEN_WAIT_UNTIL(vcount[V_PLAIN] > n, xen_now() + XEN_MS(2000)), "%s: no LAPIC vector\n", what);
	quiet();
	XEN_CHECK(vcount[V_PLAIN] == n + 1, "%s: LAPIC vector %u times\n", what, vcount[V_PLAIN] - n);
}

static void check_counters(const char *what)
{
	XEN_EXPECT("SENT_MSI", td_reg(&td, TD_SENT_MSI), sent_msi);
	XEN_EXPECT("PENDED_MSI", td_reg(&td, TD_PENDED_MSI), pended_msi);
	XEN_EXPECT("SENT_MSIX", td_reg(&td, TD_SENT_MSIX), sent_msix);
	XEN_EXPECT("PENDED_MSIX", td_reg(&td, TD_PENDED_MSIX), pended_msix);
	XEN_EXPECT("DROPPED", td_reg(&td, TD_DROPPED), 0);
	printf("xen_pirq_msix: %s: device counters agree (MSI %u sent %u pended, MSI-X %u sent %u pended)\n",
	       what, sent_msi, pended_msi, sent_msix, pended_msix);
}

static void test_msi(void)
{
	int cap = td.msi;
	uint32_t pm, flags;
	evtchn_port_t m;

	XEN_EXPECT("get_free_pirq(MSI) for the MSI capability", xen_get_free_pirq(MAP_PIRQ_TYPE_MSI, &pm), 0);
	td_cfg_write32(&td, cap + MSI_MASK_64, 1);
	td_cfg_write32(&td, cap + MSI_ADDRESS_LO, (uint32_t)XEN_PIRQ_MSI_ADDR(pm));
	td_cfg_write32(&td, cap + MSI_ADDRESS_HI, (uint32_t)(XEN_PIRQ_MSI_ADDR(pm) >> 32));
	td_cfg_write16(&td, cap + MSI_DATA_64, XEN_PIRQ_MSI_DATA);
	td_cfg_write16(&td, cap + MSI_FLAGS, td_cfg_read16(&td, cap + MSI_FLAGS) | MSI_FLAGS_ENABLE);
	fire(0, false, true);				/* masked, not bound yet: pended */
	check_all("MSI fired masked before bind");
	XEN_EXPECT("MSI pending bit before bind", td_cfg_read32(&td, cap + MSI_PENDING_64), 1);

	XEN_EXPECT("bind_pirq(MSI pirq)", xen_bind_pirq(pm, 0, &m), 0);
	XEN_EXPECT("MSI mask bit after bind (Xen unmasks at bind)", td_cfg_read32(&td, cap + MSI_MASK_64), 0);
	expect_one(m, "MSI pended before bind, sent when bind unmasked it");
	XEN_EXPECT("MSI pending bit after bind", td_cfg_read32(&td, cap + MSI_PENDING_64), 0);
	for (int i = 0; i < 3; i++)
		fire_once(0, false, m, "MSI FIRE");
	printf("xen_pirq_msix: MSI pirq %u: 3 FIREs, 3 events on port %u ok\n", pm, m);

	td_cfg_write32(&td, cap + MSI_MASK_64, 1);
	fire(0, false, true);
	fire(0, false, true);
	check_all("masked MSI vector");
	XEN_EXPECT("MSI pending bit while masked", td_cfg_read32(&td, cap + MSI_PENDING_64), 1);
	td_cfg_write32(&td, cap + MSI_MASK_64, 0);
	expect_one(m, "MSI vector unmasked: the pending message");
	XEN_EXPECT("MSI pending bit after unmask", td_cfg_read32(&td, cap + MSI_PENDING_64), 0);

	/* close: dropped, the mapping (this is the MSI-emulation pirq: the first MSI mapped it) stays */
	XEN_EXPECT("irq_status_query(MSI pirq)", xen_pirq_status(pm, &flags), 0);
	XEN_EXPECT("close(MSI pirq port)", xen_evtchn_close(m), 0);
	fire(0, false, false);
	check_all("MSI to a closed pirq port");
	XEN_EXPECT("irq_status_query(MSI pirq) after close: still mapped", xen_pirq_status(pm, &flags), 0);
	XEN_EXPECT("flags (an emulated MSI needs no EOI)", flags, 0);
	XEN_EXPECT("bind_pirq(MSI pirq) again", xen_bind_pirq(pm, 0, &m), 0);
	fire_once(0, false, m, "MSI after re-bind");
	td_cfg_write16(&td, cap + MSI_FLAGS, td_cfg_read16(&td, cap + MSI_FLAGS) & ~MSI_FLAGS_ENABLE);
	check_counters("MSI");
}

static void test_msix(void)
{
	uint32_t p1, p2, p3;
	evtchn_port_t a, b, c;
	long st1;
	uint32_t flags;

	td_msix_ctrl(&td, MSIX_FLAGS_ENABLE);
	for (int e = 0; e < 8; e++)
		XEN_CHECK(td_entry_masked(&td, e), "MSI-X entry %d not masked at reset\n", e);
	XEN_EXPECT("get_free_pirq(MSI) 1", xen_get_free_pirq(MAP_PIRQ_TYPE_MSI, &p1), 0);
	XEN_EXPECT("get_free_pirq(MSI) 2", xen_get_free_pirq(MAP_PIRQ_TYPE_MSI, &p2), 0);
	XEN_EXPECT("get_free_pirq(MSI) 3", xen_get_free_pirq(MAP_PIRQ_TYPE_MSI, &p3), 0);
	td_entry_program(&td, 0, XEN_PIRQ_MSI_ADDR(p1), XEN_PIRQ_MSI_DATA);
	td_entry_program(&td, 1, XEN_PIRQ_MSI_ADDR(p2), XEN_PIRQ_MSI_DATA);
	td_entry_program(&td, 2, KIT_MSI_ADDR(lapic_id()), V_PLAIN);	/* a plain entry beside them */
	td_entry_mask(&td, 2, false);

	fire(0, true, true);					/* masked, not bound yet */
	check_all("MSI-X entry fired masked before bind");
	XEN_EXPECT("PBA before bind", td_pba(&td), 1u << 0);
	XEN_EXPECT("bind_pirq(p1)", xen_bind_pirq(p1, 0, &a), 0);
	XEN_EXPECT("entry 0 mask bit after bind (Xen unmasks at bind)", td_entry_masked(&td, 0), 0);
	XEN_EXPECT("entry 1 (another pirq) still masked", td_entry_masked(&td, 1), 1);
	expect_one(a, "MSI-X pended before bind, sent when bind unmasked it");
	XEN_EXPECT("PBA after bind", td_pba(&td), 0);
	for (int i = 0; i < 3; i++)
		fire_once(0, true, a, "MSI-X entry 0 FIRE");
	printf("xen_pirq_msix: MSI-X entry 0, pirq %u: 3 FIREs, 3 events on port %u ok\n", p1, a);
	plain_once("plain MSI-X entry 2 beside the pirqs");
	printf("xen_pirq_msix: a plain MSI-X entry reaches LAPIC vector %#x ok\n", V_PLAIN);

	/* entry mask */
	td_entry_mask(&td, 0, true);
	for (int i = 0; i < 3; i++)
		fire(0, true, true);
	check_all("masked MSI-X entry");
	XEN_EXPECT("PBA while entry 0 masked", td_pba(&td), 1u << 0);
	td_entry_mask(&td, 0, false);
	expect_one(a, "entry 0 unmasked: 3 held-back messages sent as one");
	XEN_EXPECT("PBA after unmask", td_pba(&td), 0);

	/* function mask: the pirq entry and the plain entry */
	td_msix_ctrl(&td, MSIX_FLAGS_ENABLE | MSIX_FLAGS_MASKALL);
	uint32_t v = vcount[V_PLAIN];
	fire(0, true, true);
	fire(0, true, true);
	fire(2, true, true);
	check_all("function mask");
	XEN_CHECK(vcount[V_PLAIN] == v, "function mask: the plain entry delivered\n");
	XEN_EXPECT("PBA while the function is masked", td_pba(&td), 1u << 0 | 1u << 2);
	td_msix_ctrl(&td, MSIX_FLAGS_ENABLE);
	expect_one(a, "function unmasked: pirq entry");
	XEN_CHECK(vcount[V_PLAIN] == v + 1, "function unmasked: plain entry %u times\n", vcount[V_PLAIN] - v);
	XEN_EXPECT("PBA after function unmask", td_pba(&td), 0);

	/* a second pirq entry; then entry 0 re-programmed to a third pirq, and back */
	XEN_EXPECT("bind_pirq(p2)", xen_bind_pirq(p2, 0, &b), 0);
	XEN_EXPECT("entry 1 mask bit after bind", td_entry_masked(&td, 1), 0);
	fire_once(1, true, b, "MSI-X entry 1 (pirq 2)");
	XEN_EXPECT("bind_pirq(p3) (no vector carries it yet)", xen_bind_pirq(p3, 0, &c), 0);
	check_all("bind of a pirq no vector carries");
	td_entry_program(&td, 0, XEN_PIRQ_MSI_ADDR(p3), XEN_PIRQ_MSI_DATA);
	td_entry_mask(&td, 0, false);
	fire_once(0, true, c, "entry 0 re-programmed to pirq 3");
	td_entry_program(&td, 0, XEN_PIRQ_MSI_ADDR(p1), XEN_PIRQ_MSI_DATA);
	td_entry_mask(&td, 0, false);
	fire_once(0, true, a, "entry 0 back on pirq 1");
	printf("xen_pirq_msix: re-programming entry 0 moved delivery %u -> %u -> %u ok\n", a, c, a);

	/* close: dropped, mapping unchanged, re-bind delivers */
	st1 = xen_pirq_status(p1, &flags);
	XEN_EXPECT("close(port of pirq 1)", xen_evtchn_close(a), 0);
	fire(0, true, false);
	fire(0, true, false);
	check_all("MSI-X to a closed pirq port");
	XEN_EXPECT("irq_status_query(p1) unchanged by close", xen_pirq_status(p1, &flags), st1);
	XEN_EXPECT("entry 0 still unmasked after close", td_entry_masked(&td, 0), 0);
	evtchn_port_t a2;
	XEN_EXPECT("bind_pirq(p1) again", xen_bind_pirq(p1, 0, &a2), 0);
	fire_once(0, true, a2, "MSI-X after re-bind");
	fire_once(1, true, b, "MSI-X entry 1 still on its port");
	plain_once("plain MSI-X entry at the end");
	printf("xen_pirq_msix: close dropped 2 messages, re-bind delivers on port %u ok\n", a2);
	td_msix_ctrl(&td, 0);
	check_counters("MSI-X");
}

static void test_intx(void)
{
	/* a plain GSI of another device (the legacy testdev line) through the I/OAPIC */
	uint32_t n = vcount[V_INTX];
	ioapic_route(GSI_INTX, V_INTX, false, false, lapic_id(), false);
	testdev_set_gsi(GSI_INTX, 1);
	XEN_CHECK(XEN_WAIT_UNTIL(vcount[V_INTX] > n, xen_now() + XEN_MS(2000)), "GSI %d: nothing\n", GSI_INTX);
	testdev_set_gsi(GSI_INTX, 0);
	quiet();
	XEN_CHECK(vcount[V_INTX] == n + 1, "GSI %d: %u interrupts\n", GSI_INTX, vcount[V_INTX] - n);
	check_all("plain GSI");
	printf("xen_pirq_msix: a plain GSI %d reaches the I/OAPIC and LAPIC vector %#x once ok\n", GSI_INTX,
	       V_INTX);
}

void kit_main(void)
{
	printf("xen_pirq_msix: MSI and MSI-X pirqs through the PCI test device\n");
	xen_test_start("xen_pirq_msix");
	xen_use_upcall_vector();
	kit_set_handler(V_PLAIN, count_isr);
	kit_set_handler(V_INTX, count_isr);
	if (!td_find(&td))
		kit_fail("xen_pirq_msix: no PCI test device (run with --pci-testdev)");
	printf("xen_pirq_msix: device at 00:%02x.0, BAR0 %#x, MSI cap %#x, MSI-X cap %#x\n", td.slot, td.io,
	       td.msi, td.msix);
	td_clear_counters(&td);
	test_msi();
	test_msix();
	test_intx();
	xen_pass();
}
