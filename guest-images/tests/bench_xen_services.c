/*
 * bench_xen_services: the guest half of bench/xen_services.py (not a test: it needs the
 * bench's marker port).  Three phases, each bracketed by writes to BENCH_PORT:
 *   1 pio     n bare port-I/O exits to the bench's null port (the baseline);
 *   2 pvcon   `bytes` bytes through the PV console's out ring (io/console.h): fill what
 *             fits, notify, wait for the backend to catch up (polling out_cons);
 *   4 fill    the same loop on a private page consumed at once (the guest's own share);
 *   3 xsread  n xenstore READ round trips of "name" (io/xs_wire.h; xenstore-ring.txt):
 *             request into req, notify, poll rsp_prod, consume the whole reply.
 * After each end marker the guest reports results at BENCH_PORT + 8 (bytes, then the us it
 * spent from each notification to the drained ring; replies).
 */
#include "xen.h"

#define BENCH_PORT	0x530
#define PH_PIO		1
#define PH_PVCON	2
#define PH_XSREAD	3
#define PH_FILL		4	/* pvcon's loop on a private page, consumed at once: the guest's own share */

static inline void pause(void) { __asm__ volatile("pause" ::: "memory"); }
static void mark(int phase, int end) { outl(BENCH_PORT, (uint32_t)phase << 1 | (uint32_t)end); }
static void result(uint32_t v) { outl(BENCH_PORT + 8, v); }

static void pio_loop(uint32_t n)
{
	mark(PH_PIO, 0);
	for (uint32_t i = 0; i < n; i++)
		outl(BENCH_PORT + 4, i);
	mark(PH_PIO, 1);
	result(n);
}

static void pvcon(uint32_t total, int fill_only)
{
	uint64_t pfn = 0, evtchn = 0;
	if (xen_hvm_get_param(HVM_PARAM_CONSOLE_PFN, &pfn) || xen_hvm_get_param(HVM_PARAM_CONSOLE_EVTCHN, &evtchn) ||
	    !pfn || !evtchn)
		kit_fail("bench_xen_services: no PV console");
	static struct xencons_interface private_ring;
	volatile struct xencons_interface *r = fill_only ? &private_ring : xen_map_4k(0, pfn << 12);
	int phase = fill_only ? PH_FILL : PH_PVCON;
	static const char line[] = "bench_xen_services: PV console throughput line, 64 bytes long.\n";
	uint32_t sent = 0, off = 0;
	uint64_t notify_ns = 0;
	mark(phase, 0);
	while (sent < total) {
		uint32_t cons = r->out_cons, prod = r->out_prod, k = 0;
		uint32_t room = sizeof(r->out) - (prod - cons);
		for (; k < room && sent + k < total; k++) {
			r->out[XENCONS_MASK(prod + k, r->out)] = line[off++];
			if (off == sizeof(line) - 1)
				off = 0;
		}
		__atomic_thread_fence(__ATOMIC_RELEASE);
		r->out_prod = prod + k;
		sent += k;
		if (fill_only) {
			r->out_cons = r->out_prod;
			continue;
		}
		uint64_t t0 = xen_now();
		xen_evtchn_send((evtchn_port_t)evtchn);
		while (r->out_cons != r->out_prod)
			pause();
		notify_ns += xen_now() - t0;
	}
	mark(phase, 1);
	result(sent);
	result((uint32_t)(notify_ns / 1000));	/* us from the notification to the drained ring */
}

static uint32_t ring_put(volatile struct xenstore_domain_interface *x, const void *data, uint32_t n)
{
	const char *d = data;
	uint32_t prod = x->req_prod;
	for (uint32_t i = 0; i < n; i++)
		x->req[(prod + i) & 1023] = d[i];
	__atomic_thread_fence(__ATOMIC_RELEASE);
	x->req_prod = prod + n;
	return n;
}

static void ring_get(volatile struct xenstore_domain_interface *x, void *data, uint32_t n)
{
	char *d = data;
	uint32_t cons = x->rsp_cons;
	while (x->rsp_prod - cons < n)
		pause();
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	for (uint32_t i = 0; i < n; i++)
		d[i] = x->rsp[(cons + i) & 1023];
	__atomic_thread_fence(__ATOMIC_RELEASE);
	x->rsp_cons = cons + n;
}

static void xsread(uint32_t n)
{
	uint64_t pfn = 0, evtchn = 0;
	if (xen_hvm_get_param(HVM_PARAM_STORE_PFN, &pfn) || xen_hvm_get_param(HVM_PARAM_STORE_EVTCHN, &evtchn) ||
	    !pfn || !evtchn)
		kit_fail("bench_xen_services: no xenstore");
	volatile struct xenstore_domain_interface *x = xen_map_4k(1, pfn << 12);
	static const char path[] = "name";
	char buf[256];
	uint32_t ok = 0;
	mark(PH_XSREAD, 0);
	for (uint32_t i = 0; i < n; i++) {
		struct xsd_sockmsg h = { XS_READ, i, 0, sizeof(path) };
		ring_put(x, &h, sizeof(h));
		ring_put(x, path, sizeof(path));
		xen_evtchn_send((evtchn_port_t)evtchn);
		struct xsd_sockmsg rh;
		ring_get(x, &rh, sizeof(rh));
		if (rh.len > sizeof(buf))
			kit_fail("bench_xen_services: reply of %u bytes", rh.len);
		ring_get(x, buf, rh.len);
		ok += rh.type == XS_READ && rh.req_id == i;
	}
	mark(PH_XSREAD, 1);
	result(ok);
}

void kit_main(void)
{
	printf("bench_xen_services: PV console and xenstore vs a bare exit\n");
	xen_test_start("bench_xen_services");
	uint32_t n = (uint32_t)xen_cmdline_u64("n", 1000);
	uint32_t bytes = (uint32_t)xen_cmdline_u64("bytes", 262144);
	uint32_t reps = (uint32_t)xen_cmdline_u64("reps", 1);
	for (uint32_t r = 0; r < reps; r++) {
		pio_loop(n);
		pvcon(bytes, 1);
		pvcon(bytes, 0);
		if (xen_cmdline_u64("xenstore", 1))
			xsread(n);
	}
	xen_pass();
}
