/*
 * xen_fifo (--cpus 2): FIFO event channels (xen/common/event_fifo.c, public/event_channel.h
 * "FIFO ABI"), consumed as Linux's drivers/xen/events/events_fifo.c does: the upcall takes
 * the control block's READY bits, lowest (highest priority) first, follows each queue from
 * HEAD, clearing LINKED|LINK of each word with cmpxchg; masking and unmasking are the
 * guest's own word updates (clear_masked spins while the hypervisor holds BUSY).
 *
 *  - before init_control: expand_array -> -EOPNOTSUPP, set_priority -> -ENOSYS;
 *    init_control(vCPU 99) -> -ENOENT, misaligned / page-crossing offset and a gfn that
 *    isn't RAM -> -EINVAL (the domain stays 2-level);
 *  - init_control(0) -> 0 with link_bits 17; a second one for vCPU 0 -> -EINVAL;
 *  - a port pending in 2-level before the switch is still pending in FIFO once its event
 *    word exists (setup_ports, add_page_to_event_array's re-raise), linked on unmask;
 *  - a singleshot timer armed in 2-level that expires after the switch raises its
 *    (masked) VIRQ_TIMER word in FIFO: where KVM runs the timer in 2-level, the VMM must
 *    take it back before switching (xen/kvm_timer.py);
 *  - queues: priorities 2 < 7 < 12 consumed in that order whatever the send order; one
 *    priority is FIFO; set_priority(16) and set_priority(port 5000) -> -EINVAL;
 *  - a masked port becomes PENDING but is not linked; EVTCHNOP_unmask links it;
 *  - VIRQ_TIMER at priority 0; SCHEDOP_poll of a pending FIFO port returns at once;
 *  - an interdomain port moved to vCPU 1 (bind_vcpu) while linked on vCPU 0's queue is
 *    delivered there once, later events on vCPU 1, and vCPU 0's queue keeps working;
 *  - race (2 vCPUs): vCPU 1 sends to vCPU 0's ports while vCPU 0 consumes and masks and
 *    unmasks them: every event is delivered exactly once;
 *  - expand_array fills the array's 128 pages, then -ENOSPC.
 */
#include "xen.h"

#define NAME "xen_fifo"
#define AP_APIC 1
#define NPORTS 24			/* race ports on vCPU 0 */
#define LOGN 64

static volatile struct evtchn_fifo_control_block *cb[2];
static volatile event_word_t *array[EVTCHN_FIFO_NR_CHANNELS / 1024];
static uint32_t local_head[2][EVTCHN_FIFO_MAX_QUEUES];
static volatile uint32_t fcount[XEN_KIT_MAX_PORTS];
static volatile uint32_t logv[2][LOGN], log_n[2];
static volatile uint8_t outstanding[XEN_KIT_MAX_PORTS];
static volatile uint32_t dups, race_handled, ap_sent;
static volatile int ap_state, ap_error, ap_go;
static volatile evtchn_port_t race_port[NPORTS];
static uint32_t race_events;

#define BIT(b) (1u << (b))

static volatile event_word_t *word(evtchn_port_t p) { return &array[p / 1024][p % 1024]; }

static unsigned lowest(uint32_t x)		/* x != 0 */
{
	unsigned n = 0;
	while (!(x & 1)) {
		x >>= 1;
		n++;
	}
	return n;
}

static uint32_t clear_linked(volatile event_word_t *w)
{
	uint32_t old = *w;
	while (!__atomic_compare_exchange_n(w, &old, old & ~(BIT(EVTCHN_FIFO_LINKED) | EVTCHN_FIFO_LINK_MASK),
					    false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
		;
	return old & EVTCHN_FIFO_LINK_MASK;
}

static void handled(unsigned v, evtchn_port_t p)
{
	if (p < XEN_KIT_MAX_PORTS) {
		fcount[p]++;
		for (unsigned i = 0; i < NPORTS; i++)
			if (race_port[i] == p) {
				/* vCPU 1 sets it before each send: a delivery finding it clear is a second one */
				if (!__atomic_exchange_n(&outstanding[p], 0, __ATOMIC_SEQ_CST))
					dups++;
				race_handled++;
			}
	}
	if (log_n[v] < LOGN)
		logv[v][log_n[v]] = p;
	log_n[v]++;
}

/* consume_one_event */
static void consume_one(unsigned v, unsigned q, uint32_t *ready)
{
	uint32_t head = local_head[v][q];
	if (!head)
		head = __atomic_load_n(&cb[v]->head[q], __ATOMIC_SEQ_CST);
	evtchn_port_t port = head;
	volatile event_word_t *w = word(port);
	head = clear_linked(w);
	if (!head)
		*ready &= ~BIT(q);
	uint32_t x = *w;
	if ((x & BIT(EVTCHN_FIFO_PENDING)) && !(x & BIT(EVTCHN_FIFO_MASKED))) {
		__atomic_fetch_and(w, ~BIT(EVTCHN_FIFO_PENDING), __ATOMIC_SEQ_CST);	/* the ack */
		handled(v, port);
	}
	local_head[v][q] = head;
}

static void fifo_upcall(struct kit_frame *f)
{
	(void)f;
	unsigned v = xen_vcpu_id();
	volatile struct vcpu_info *vi = xen_vcpu_info();
	vi->evtchn_upcall_pending = 0;
	barrier();
	if (v < 2 && cb[v]) {
		uint32_t ready = __atomic_exchange_n(&cb[v]->ready, 0, __ATOMIC_SEQ_CST);
		while (ready) {
			consume_one(v, lowest(ready), &ready);
			ready |= __atomic_exchange_n(&cb[v]->ready, 0, __ATOMIC_SEQ_CST);
		}
	}
	lapic_eoi();
}

static void use_fifo_upcall(void)
{
	kit_set_handler(XEN_KIT_UPCALL_VECTOR, fifo_upcall);
	if (xen_set_upcall_vector(xen_vcpu_id(), XEN_KIT_UPCALL_VECTOR))
		kit_fail(NAME ": set_upcall_vector");
}

static long init_control(uint32_t vcpu, void *page, uint32_t offset, uint8_t *link_bits)
{
	struct evtchn_init_control ic = { .control_gfn = (uintptr_t)page >> 12, .offset = offset, .vcpu = vcpu };
	long rc = HYPERVISOR_event_channel_op(EVTCHNOP_init_control, &ic);
	if (link_bits)
		*link_bits = ic.link_bits;
	if (rc == 0 && vcpu < 2)
		cb[vcpu] = (void *)((uint8_t *)page + offset);
	return rc;
}

static long expand(void *page, bool init)
{
	if (init)		/* Linux's init_array_page: every event masked */
		for (unsigned i = 0; i < 1024; i++)
			((volatile event_word_t *)page)[i] = BIT(EVTCHN_FIFO_MASKED);
	struct evtchn_expand_array ea = { .array_gfn = (uintptr_t)page >> 12 };
	return HYPERVISOR_event_channel_op(EVTCHNOP_expand_array, &ea);
}

static long set_priority(evtchn_port_t p, uint32_t prio)
{
	struct evtchn_set_priority sp = { .port = p, .priority = prio };
	return HYPERVISOR_event_channel_op(EVTCHNOP_set_priority, &sp);
}

static void fifo_mask(evtchn_port_t p) { __atomic_fetch_or(word(p), BIT(EVTCHN_FIFO_MASKED), __ATOMIC_SEQ_CST); }

/* evtchn_fifo_unmask: clear MASKED unless BUSY; EVTCHNOP_unmask if pending. */
static void fifo_unmask(evtchn_port_t p)
{
	volatile event_word_t *w = word(p);
	uint32_t cur = *w;
	for (;;) {
		uint32_t old = cur & ~BIT(EVTCHN_FIFO_BUSY);	/* fails while the hypervisor holds BUSY */
		cur = old;
		if (__atomic_compare_exchange_n(w, &cur, old & ~BIT(EVTCHN_FIFO_MASKED), false,
						__ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
			break;
	}
	if (*w & BIT(EVTCHN_FIFO_PENDING))
		xen_evtchn_unmask(p);
}

static evtchn_port_t bind_ipi(uint32_t vcpu, uint32_t prio)
{
	evtchn_port_t p;
	if (xen_evtchn_bind_ipi(vcpu, &p))
		kit_fail(NAME ": bind_ipi(%u)", vcpu);
	if (prio != EVTCHN_FIFO_PRIORITY_DEFAULT && set_priority(p, prio))
		kit_fail(NAME ": set_priority(%u, %u)", p, prio);
	fifo_unmask(p);
	return p;
}

static void expect_log(const char *what, unsigned v, uint32_t base, const evtchn_port_t *want, unsigned n)
{
	XEN_WAIT_UNTIL(log_n[v] >= base + n, xen_now() + XEN_MS(2000));
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(5));
	bool ok = log_n[v] == base + n;
	for (unsigned i = 0; ok && i < n; i++)
		ok = logv[v][base + i] == want[i];
	if (!ok) {
		printf(NAME ": %s: got", what);
		for (unsigned i = base; i < log_n[v] && i < LOGN; i++)
			printf(" %u", logv[v][i]);
		printf(", want");
		for (unsigned i = 0; i < n; i++)
			printf(" %u", want[i]);
		printf("\n");
		xen_check_failed(__FILE__, __LINE__, "%s", what);
	} else {
		printf(NAME ": %s ok\n", what);
	}
}

static void ap_fail(int code) { ap_error = code; for (;;) { cli(); hlt(); } }

static void ap_main(void)
{
	xen_wait_init();
	if (xen_register_vcpu_info(xen_scratch_page(1), 64) != 0)
		ap_fail(1);
	use_fifo_upcall();
	if (init_control(1, xen_scratch_page(3), 64, NULL) != 0)
		ap_fail(2);
	__atomic_store_n(&ap_state, 1, __ATOMIC_SEQ_CST);

	if (!XEN_WAIT_UNTIL(ap_go, xen_now() + XEN_MS(20000)))
		ap_fail(3);
	/* The race: send to vCPU 0's ports whenever the previous event there was handled. */
	uint32_t x = 12345;
	uint64_t give_up = xen_now() + XEN_MS(60000);
	while (ap_sent < race_events && xen_now() < give_up) {
		x = x * 1103515245 + 12345;
		evtchn_port_t p = race_port[(x >> 16) % NPORTS];
		if (__atomic_exchange_n(&outstanding[p], 1, __ATOMIC_SEQ_CST))
			continue;
		if (xen_evtchn_send(p))
			ap_fail(4);
		ap_sent++;
	}
	__atomic_store_n(&ap_state, 2, __ATOMIC_SEQ_CST);
	for (;;)
		XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(100));
}

void kit_main(void)
{
	printf(NAME ": FIFO event channels\n");
	xen_test_start(NAME);
	race_events = (uint32_t)xen_cmdline_u64("events", 1500);
	XEN_EXPECT("register_vcpu_info(0)", xen_register_vcpu_info(xen_scratch_page(0), 0), 0);
	use_fifo_upcall();

	/* Still 2-level: the FIFO ops' errors. */
	XEN_EXPECT("expand_array before init_control", expand(xen_scratch_page(4), true), -XEN_EOPNOTSUPP);
	evtchn_port_t pre;
	XEN_EXPECT("bind_ipi(0) in 2-level", xen_evtchn_bind_ipi(0, &pre), 0);
	XEN_EXPECT("set_priority in 2-level", set_priority(pre, 3), -XEN_ENOSYS);
	XEN_EXPECT("init_control(vcpu 99)", init_control(99, xen_scratch_page(2), 0, NULL), -XEN_ENOENT);
	XEN_EXPECT("init_control(offset 4)", init_control(0, xen_scratch_page(2), 4, NULL), -XEN_EINVAL);
	XEN_EXPECT("init_control(offset crossing the page)", init_control(0, xen_scratch_page(2), 4096 - 64, NULL),
		   -XEN_EINVAL);
	struct evtchn_init_control bad = { .control_gfn = 1ull << 40, .vcpu = 0 };
	XEN_EXPECT("init_control(gfn not RAM)", HYPERVISOR_event_channel_op(EVTCHNOP_init_control, &bad), -XEN_EINVAL);
	XEN_EXPECT("expand_array after failed init_controls", expand(xen_scratch_page(4), true), -XEN_EOPNOTSUPP);

	/* A 2-level pending (masked) port carried into FIFO. */
	xen_evtchn_mask(pre);
	XEN_EXPECT("send(pre) in 2-level, masked", xen_evtchn_send(pre), 0);
	XEN_CHECK(xen_evtchn_pending(pre), "2-level pending bit not set\n");

	/* A timer armed in 2-level, due after the switch (if the switch is slower, the 2-level
	 * pending bit is carried over: the same outcome, nothing to catch then). */
	evtchn_port_t tmr;
	XEN_EXPECT("bind_virq(TIMER, 0) in 2-level", xen_evtchn_bind_virq(VIRQ_TIMER, 0, &tmr), 0);
	xen_evtchn_mask(tmr);
	uint64_t tmr_dl = xen_now() + XEN_MS(200);
	XEN_EXPECT("set_singleshot_timer(+200 ms) in 2-level", xen_set_singleshot(tmr_dl, 0), 0);

	uint8_t lb = 0;
	XEN_EXPECT("init_control(0)", init_control(0, xen_scratch_page(2), 0, &lb), 0);
	XEN_EXPECT("link_bits", lb, EVTCHN_FIFO_LINK_BITS);
	XEN_EXPECT("init_control(0) again", init_control(0, xen_scratch_page(5), 0, NULL), -XEN_EINVAL);
	array[0] = xen_scratch_page(4);
	XEN_EXPECT("expand_array(page 0)", expand(xen_scratch_page(4), true), 0);
	XEN_CHECK(*word(pre) & BIT(EVTCHN_FIFO_PENDING), "pending state lost in the switch (word %#x)\n", *word(pre));
	XEN_CHECK(!(*word(pre) & BIT(EVTCHN_FIFO_LINKED)), "a masked word got linked\n");
	fifo_unmask(pre);
	XEN_CHECK(XEN_WAIT_UNTIL(fcount[pre] == 1, xen_now() + XEN_MS(2000)), "pre delivered %u times\n", fcount[pre]);
	printf(NAME ": the 2-level pending port is delivered once unmasked in FIFO ok\n");
	XEN_CHECK(XEN_WAIT_UNTIL(*word(tmr) & BIT(EVTCHN_FIFO_PENDING), tmr_dl + XEN_MS(2000)),
		  "the timer armed in 2-level never raised its FIFO word (%#x; now - deadline %ld us)\n",
		  *word(tmr), (long)(xen_now() - tmr_dl) / 1000);
	fifo_unmask(tmr);
	XEN_CHECK(XEN_WAIT_UNTIL(fcount[tmr] == 1, xen_now() + XEN_MS(2000)), "timer delivered %u times\n", fcount[tmr]);
	XEN_EXPECT("close(timer port)", xen_evtchn_close(tmr), 0);
	printf(NAME ": a timer armed in 2-level fires into FIFO after the switch ok\n");

	/* Priorities */
	evtchn_port_t a = bind_ipi(0, EVTCHN_FIFO_PRIORITY_DEFAULT), b = bind_ipi(0, 2), c = bind_ipi(0, 12);
	XEN_EXPECT("set_priority(16)", set_priority(a, EVTCHN_FIFO_PRIORITY_MIN + 1), -XEN_EINVAL);
	XEN_EXPECT("set_priority(port 5000)", set_priority(5000, 1), -XEN_EINVAL);
	uint32_t base = log_n[0];
	cli();
	xen_evtchn_send(c);
	xen_evtchn_send(a);
	xen_evtchn_send(b);
	XEN_CHECK(cb[0]->ready == (BIT(2) | BIT(7) | BIT(12)), "ready %#x\n", cb[0]->ready);
	sti();
	expect_log("priorities 2, 7, 12 consumed in order", 0, base, (evtchn_port_t[]){ b, a, c }, 3);

	evtchn_port_t d = bind_ipi(0, EVTCHN_FIFO_PRIORITY_DEFAULT), e = bind_ipi(0, EVTCHN_FIFO_PRIORITY_DEFAULT);
	base = log_n[0];
	cli();
	xen_evtchn_send(e);
	xen_evtchn_send(d);
	xen_evtchn_send(a);
	xen_evtchn_send(e);		/* already linked: no second event */
	XEN_CHECK((*word(e) & EVTCHN_FIFO_LINK_MASK) == d && (*word(d) & EVTCHN_FIFO_LINK_MASK) == a,
		  "links e->%u d->%u\n", *word(e) & EVTCHN_FIFO_LINK_MASK, *word(d) & EVTCHN_FIFO_LINK_MASK);
	sti();
	expect_log("one priority is first in, first out", 0, base, (evtchn_port_t[]){ e, d, a }, 3);

	/* Masking */
	fifo_mask(a);
	base = log_n[0];
	xen_evtchn_send(a);
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(20));
	XEN_CHECK(log_n[0] == base, "a masked port was delivered\n");
	XEN_CHECK((*word(a) & (BIT(EVTCHN_FIFO_PENDING) | BIT(EVTCHN_FIFO_LINKED))) == BIT(EVTCHN_FIFO_PENDING),
		  "masked word %#x\n", *word(a));
	struct sched_poll poll = { .ports = (uintptr_t)&a, .nr_ports = 1, .timeout = xen_now() + XEN_MS(3000) };
	uint64_t t = xen_now();
	XEN_EXPECT("poll(pending masked FIFO port)", HYPERVISOR_sched_op(SCHEDOP_poll, &poll), 0);
	XEN_CHECK(xen_now() - t < XEN_MS(1000), "poll of a pending port blocked\n");
	fifo_unmask(a);
	expect_log("masked port linked by unmask", 0, base, (evtchn_port_t[]){ a }, 1);

	/* VIRQ_TIMER at the highest priority */
	evtchn_port_t tp;
	XEN_EXPECT("bind_virq(TIMER, 0)", xen_evtchn_bind_virq(VIRQ_TIMER, 0, &tp), 0);
	XEN_EXPECT("set_priority(timer, 0)", set_priority(tp, 0), 0);
	fifo_unmask(tp);
	XEN_EXPECT("set_singleshot(+5 ms)", xen_set_singleshot(xen_now() + XEN_MS(5), 0), 0);
	XEN_CHECK(XEN_WAIT_UNTIL(fcount[tp] == 1, xen_now() + XEN_MS(2000)), "timer delivered %u times\n", fcount[tp]);
	printf(NAME ": VIRQ_TIMER at priority 0 ok\n");

	/* vCPU 1 */
	if (kit_start_ap(AP_APIC, ap_main) != 0)
		kit_fail(NAME ": AP did not start");
	if (!XEN_WAIT_UNTIL(ap_state >= 1 || ap_error, xen_now() + XEN_MS(20000)) || ap_error)
		kit_fail(NAME ": AP setup (error %d)", ap_error);
	printf(NAME ": vCPU 1 initialised its control block ok\n");

	/* A port moved to vCPU 1 while linked on vCPU 0's queue. */
	evtchn_port_t ua, ub;
	XEN_EXPECT("alloc_unbound", xen_evtchn_alloc_unbound(DOMID_SELF, &ua), 0);
	XEN_EXPECT("bind_interdomain", xen_evtchn_bind_interdomain(DOMID_SELF, ua, &ub), 0);
	fifo_unmask(ub);				/* bind's own notification */
	fifo_unmask(ua);
	XEN_WAIT_UNTIL(fcount[ub] >= 1, xen_now() + XEN_MS(1000));
	uint32_t nb = fcount[ub];
	cli();
	xen_evtchn_send(ua);
	XEN_CHECK(*word(ub) & BIT(EVTCHN_FIFO_LINKED), "ub not linked\n");
	XEN_EXPECT("bind_vcpu(ub, 1) while linked", xen_evtchn_bind_vcpu(ub, 1), 0);
	xen_evtchn_send(ua);			/* still linked on vCPU 0: nothing new */
	sti();
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(20));
	XEN_EXPECT("deliveries of ub on vCPU 0 after the move", fcount[ub] - nb, 1);
	uint32_t n1 = log_n[1];
	xen_evtchn_send(ua);
	XEN_CHECK(XEN_WAIT_UNTIL(log_n[1] == n1 + 1, xen_now() + XEN_MS(2000)) && logv[1][n1] == ub,
		  "ub not delivered on vCPU 1\n");
	base = log_n[0];
	xen_evtchn_send(d);
	expect_log("vCPU 0's queue after the move", 0, base, (evtchn_port_t[]){ d }, 1);

	/* The race */
	for (unsigned i = 0; i < NPORTS; i++)
		race_port[i] = bind_ipi(0, (uint32_t[]){ 0, 7, 15 }[i % 3]);
	uint32_t before = race_handled;
	ap_go = 1;
	uint32_t x = 777, flips = 0;
	while (ap_state < 2 && !ap_error) {
		XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(1));
		x = x * 1103515245 + 12345;
		evtchn_port_t p = race_port[(x >> 16) % NPORTS];
		cli();
		fifo_mask(p);
		fifo_unmask(p);			/* spins if the hypervisor is linking behind it */
		sti();
		flips++;
	}
	if (ap_error)
		kit_fail(NAME ": AP error %d in the race", ap_error);
	bool drained = XEN_WAIT_UNTIL(({ bool any = false;
					 for (unsigned i = 0; i < NPORTS; i++) any |= outstanding[race_port[i]];
					 !any; }), xen_now() + XEN_MS(3000));
	printf(NAME ": race: %u sent by vCPU 1, %u handled on vCPU 0, %u duplicates, %u mask flips\n",
	       ap_sent, race_handled - before, dups, flips);
	XEN_CHECK(drained, "events lost in the race\n");
	XEN_CHECK(dups == 0, "events delivered twice\n");
	XEN_CHECK(race_handled - before == ap_sent && ap_sent == race_events, "sent %u handled %u\n", ap_sent,
		  race_handled - before);

	/* Fill the event array (one page aliased, as Xen allows), then -ENOSPC. */
	XEN_EXPECT("expand_array(gfn not RAM)", expand((void *)(uintptr_t)(1ull << 40), false), -XEN_EINVAL);
	long rc = expand(xen_scratch_page(6), true);
	unsigned pages = rc ? 1 : 2;
	while (pages < EVTCHN_FIFO_NR_CHANNELS / 1024 && (rc = expand(xen_scratch_page(6), false)) == 0)
		pages++;
	XEN_EXPECT("event array pages", rc ?: pages, EVTCHN_FIFO_NR_CHANNELS / 1024);
	XEN_EXPECT("expand_array with a full array", expand(xen_scratch_page(6), false), -XEN_ENOSPC);
	xen_pass();
}
