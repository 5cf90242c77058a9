/*
 * xen_pv_console: the PV console as a guest finds it on Xen + its toolstack
 * (public/io/console.h; tools/libs/guest/xg_dom_x86.c special pages; Linux's
 * drivers/tty/hvc/hvc_xen.c is the model client):
 *  - HVM_PARAM_CONSOLE_PFN is the console special page (gfn 0xfefff) and
 *    HVM_PARAM_CONSOLE_EVTCHN an interdomain port whose other end is domain 0;
 *  - the page is outside RAM, in an E820_RESERVED range of the PVH memmap;
 *  - output: lines through the out ring (one of 3000 bytes, so the ring wraps),
 *    each consumed by the backend (out_cons catches up with out_prod) and
 *    acknowledged with an event on the port;
 *  - input: the host's stdin (the test pipes "ping-pv\n") arrives in the in
 *    ring with an event; the guest echoes it as "PVCON-ECHO ping-pv";
 *  - corrupt indices (out_prod 5000 past out_cons, more than the ring holds) are
 *    ignored as xenconsoled does (out_cons doesn't move), and the backend serves
 *    the ring again once the guest restores them.
 * Expected on the VMM's stdout: "PVCON-5e1d hello through the PV console ring",
 * "PVCON-WRAP <3000 bytes> end", "PVCON-ECHO ping-pv", "PVCON-AFTER corrupt indices".
 */
#include "xen.h"

#define WAIT_MS 5000
static volatile struct xencons_interface *ring;
static evtchn_port_t port;

static void pv_write(const char *s, unsigned n)
{
	while (n) {
		uint32_t cons = ring->out_cons, prod = ring->out_prod;
		unsigned room = sizeof(ring->out) - (prod - cons), k = 0;
		if (room == 0) {
			uint32_t before = xen_evtchn_count[port];
			xen_evtchn_send(port);
			if (!XEN_WAIT_UNTIL(ring->out_cons != cons || xen_evtchn_count[port] != before,
					    xen_now() + XEN_MS(WAIT_MS)))
				kit_fail("xen_pv_console: the backend doesn't drain a full out ring");
			continue;
		}
		for (; k < room && k < n; k++)
			ring->out[XENCONS_MASK(prod + k, ring->out)] = s[k];
		__atomic_thread_fence(__ATOMIC_RELEASE);	/* data before the index (hvc_xen: wmb) */
		ring->out_prod = prod + k;
		s += k;
		n -= k;
	}
}

static void pv_flush(const char *what)
{
	uint32_t before = xen_evtchn_count[port];
	xen_evtchn_send(port);
	if (!XEN_WAIT_UNTIL(ring->out_cons == ring->out_prod, xen_now() + XEN_MS(WAIT_MS)))
		kit_fail("xen_pv_console: %s: out_cons %u never reached out_prod %u", what, ring->out_cons,
			 ring->out_prod);
	if (!XEN_WAIT_UNTIL(xen_evtchn_count[port] != before, xen_now() + XEN_MS(WAIT_MS)))
		kit_fail("xen_pv_console: %s: no event back from the backend", what);
}

static void pv_print(const char *s)
{
	unsigned n = 0;
	while (s[n])
		n++;
	pv_write(s, n);
	pv_flush(s);
}

static void check_reserved(uint64_t gpa)
{
	const struct hvm_start_info *si = kit_start_info();
	if (!si || si->version < 1)
		kit_fail("xen_pv_console: no PVH memmap");
	const struct hvm_memmap_table_entry *e = (const void *)(uintptr_t)si->memmap_paddr;
	for (uint32_t i = 0; i < si->memmap_entries; i++) {
		if (e[i].addr <= gpa && gpa + 4096 <= e[i].addr + e[i].size) {
			XEN_CHECK(e[i].type == 2, "console page %#lx is in a memmap entry of type %u\n",
				  (unsigned long)gpa, e[i].type);
			printf("xen_pv_console: page %#lx in reserved range %#lx+%#lx ok\n", (unsigned long)gpa,
			       (unsigned long)e[i].addr, (unsigned long)e[i].size);
			return;
		}
		XEN_CHECK(!(e[i].type == 1 && e[i].addr < gpa + 4096 && gpa < e[i].addr + e[i].size),
			  "console page overlaps RAM\n");
	}
	kit_fail("xen_pv_console: console page %#lx is in no memmap entry", (unsigned long)gpa);
}

void kit_main(void)
{
	printf("xen_pv_console: the PV console ring from the HVM params\n");
	xen_test_start("xen_pv_console");
	xen_use_upcall_vector();

	uint64_t pfn = 0, evtchn = 0;
	XEN_EXPECT("get_param(CONSOLE_PFN)", xen_hvm_get_param(HVM_PARAM_CONSOLE_PFN, &pfn), 0);
	XEN_EXPECT("get_param(CONSOLE_EVTCHN)", xen_hvm_get_param(HVM_PARAM_CONSOLE_EVTCHN, &evtchn), 0);
	XEN_EXPECT("CONSOLE_PFN is the console special page", pfn, XEN_SPECIAL_PFN(XEN_SPECIALPAGE_CONSOLE));
	XEN_CHECK(evtchn != 0 && evtchn < XEN_KIT_MAX_PORTS, "CONSOLE_EVTCHN %lu\n", (unsigned long)evtchn);
	port = (evtchn_port_t)evtchn;
	struct evtchn_status st;
	XEN_EXPECT("status(console port)", xen_evtchn_status(port, &st), 0);
	XEN_EXPECT("console port is interdomain", st.status, EVTCHNSTAT_interdomain);
	XEN_EXPECT("console port's remote domain", st.u.interdomain.dom, 0);
	check_reserved(pfn << 12);

	ring = xen_map_4k(0, pfn << 12);
	XEN_EXPECT("connection", ring->connection, 0);
	xen_evtchn_unmask(port);

	pv_print("PVCON-5e1d hello through the PV console ring\n");

	/* 3000 bytes in one line: more than the out ring, so it wraps (and fills). */
	static char big[3000 + 16];
	unsigned n = 0;
	for (const char *p = "PVCON-WRAP "; *p; p++)
		big[n++] = *p;
	while (n < 3000)
		big[n] = 'a' + n % 26, n++;
	for (const char *p = " end\n"; *p; p++)
		big[n++] = *p;
	pv_write(big, n);
	pv_flush("wrapped line");
	printf("xen_pv_console: output through the ring, wrapped, acknowledged ok\n");

	/* Input: the test pipes "ping-pv\n" into the VMM. */
	char line[64];
	unsigned got = 0;
	uint64_t deadline = xen_now() + XEN_MS(WAIT_MS);
	while (got < sizeof(line) - 1 && (got == 0 || line[got - 1] != '\n')) {
		uint32_t cons = ring->in_cons, prod = ring->in_prod;
		if (cons == prod) {
			xen_evtchn_send(port);		/* "I consumed": the backend pushes what waits */
			uint32_t before = xen_evtchn_count[port];
			if (!XEN_WAIT_UNTIL(ring->in_prod != prod || xen_evtchn_count[port] != before, deadline))
				kit_fail("xen_pv_console: no input in the in ring (got %u bytes)", got);
			continue;
		}
		XEN_CHECK(prod - cons <= sizeof(ring->in), "in ring indices %u..%u\n", cons, prod);
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		while (cons != prod && got < sizeof(line) - 1)
			line[got++] = ring->in[XENCONS_MASK(cons++, ring->in)];
		__atomic_thread_fence(__ATOMIC_RELEASE);
		ring->in_cons = cons;
	}
	line[got] = 0;
	pv_print("PVCON-ECHO ");
	pv_print(line);
	printf("xen_pv_console: input arrived and was echoed ok\n");

	/* Corrupt indices: ignored, nothing consumed; the VMM keeps serving. */
	uint32_t cons = ring->out_cons;
	ring->out_prod = cons + 5000;
	uint32_t before = xen_evtchn_count[port];
	xen_evtchn_send(port);
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(50));
	XEN_EXPECT("out_cons after corrupt indices", ring->out_cons, cons);
	XEN_EXPECT("no event for corrupt indices", xen_evtchn_count[port], before);
	ring->out_prod = cons;
	pv_print("PVCON-AFTER corrupt indices\n");
	printf("xen_pv_console: corrupt indices ignored ok\n");
	xen_pass();
}
