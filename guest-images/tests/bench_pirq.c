/*
 * bench_pirq: the guest of bench/pirq.py -- PIRQ-MSI delivery against a plain MSI-X, same VM.
 * Not a test (tests/ builds every guest; this one needs bench/pirq.py's marker port).
 *
 * The PCI test device (devices/pci_testdev.py, vmm run --pci-testdev) has MSI-X entry 0
 * programmed to a LAPIC vector (plain) and entry 1 to an MSI PIRQ bound to an event channel
 * (Linux's HVM order, arch/x86/pci/xen.c xen_hvm_setup_msi_irqs: PHYSDEVOP_get_free_pirq,
 * the entry written with the PIRQ message, EVTCHNOP_bind_pirq, then the entry unmasked);
 * events arrive on the per-vCPU upcall vector (HVMOP_set_evtchn_upcall_vector).
 *
 * Command line: mode=a|b (as a number: 0xa / 0xb), n=, reps=, m=, period= (µs).
 *  mode=a (guest-driven): per rep, N bare PIO exits to the bench's null port, N self-IPIs
 *         to each handler (the guest's share), then N FIREs of each target, one at a time,
 *         waiting for each interrupt (sti; hlt); then, once a one-message timer burst gave
 *         both vectors their irqfds, the FIREs again (now through the eventfd).
 *  mode=b (device-thread bursts): an idle wait of M * PERIOD µs, then per target a timer
 *         burst of M messages PERIOD µs apart while the guest only halts and counts.
 * Every phase is bracketed by writes to BENCH_PORT (bench/pirq.py snapshots time and the
 * VM's exit counters there); after the end marker the guest reports what it received at
 * BENCH_PORT + 8.  Nothing else in a measured phase exits to userspace except the FIRE
 * writes (mode a): the LAPIC (EOI, timer) is KVM's, halts stay in the kernel.
 */
#include "xen.h"
#include "pci_testdev.h"

/* bench/pirq.py: +0 phase marker (code << 1 | end), +4 null port, +8 result of the phase */
#define BENCH_PORT	0x530
#define PH_PIO		1
#define PH_PLAIN	2
#define PH_PIRQ		3
#define PH_IDLE		4
#define PH_IPI_PLAIN	5	/* guest-only baselines: no exit, no VMM */
#define PH_IPI_UPCALL	6
#define PH_PLAIN_FD	7	/* PLAIN and PIRQ again once the vectors have irqfds */
#define PH_PIRQ_FD	8

#define ENTRY_PLAIN	0
#define ENTRY_PIRQ	1
#define VEC_PLAIN	0x80

static struct testdev td;
static volatile uint32_t plain_count;
static evtchn_port_t pirq_port;

static void plain_isr(struct kit_frame *f)
{
	(void)f;
	plain_count++;
	lapic_eoi();
}

static void mark(int phase, int end) { outl(BENCH_PORT, (uint32_t)phase << 1 | (uint32_t)end); }
static void result(uint32_t v) { outl(BENCH_PORT + 8, v); }

static volatile uint32_t *counter_of(int phase)
{
	return phase == PH_PLAIN || phase == PH_IPI_PLAIN || phase == PH_PLAIN_FD ? &plain_count
										   : &xen_evtchn_count[pirq_port];
}

/*
 * The guest's share of each interrupt, with no exit and no VMM: a self-IPI (the ICR is KVM's
 * LAPIC) to the plain vector; or to the upcall vector after setting the port's pending bits
 * ourselves, as an event delivery would (Xen evtchn_2l_set_pending), so xen_upcall() runs as
 * for a PIRQ.
 */
static void self_ipi(int phase)
{
	if (phase == PH_IPI_UPCALL) {
		volatile struct vcpu_info *vi = xen_vcpu_info();
		xen_set_bit(pirq_port % 64, &xen_shared_info->evtchn_pending[pirq_port / 64]);
		xen_set_bit(pirq_port / 64, &vi->evtchn_pending_sel);
		vi->evtchn_upcall_pending = 1;
		lapic_send_ipi(lapic_id(), XEN_KIT_UPCALL_VECTOR);
	} else {
		lapic_send_ipi(lapic_id(), VEC_PLAIN);
	}
}

static uint32_t target_of(int phase)
{
	return TD_TARGET_MSIX | (phase == PH_PLAIN || phase == PH_PLAIN_FD ? ENTRY_PLAIN : ENTRY_PIRQ);
}

/* mode a: N messages one at a time, each waited for. */
static void fire_each(int phase, uint32_t n)
{
	volatile uint32_t *ctr = counter_of(phase);
	uint32_t target = target_of(phase), start = *ctr;

	mark(phase, 0);
	for (uint32_t i = 0; i < n; i++) {
		uint32_t before = *ctr;
		if (phase == PH_IPI_PLAIN || phase == PH_IPI_UPCALL)
			self_ipi(phase);
		else
			td_write(&td, TD_FIRE, target);
		if (!KIT_WAIT_FOR(*ctr != before, 1000))
			kit_fail("bench_pirq: phase %d: message %u not delivered", phase, i);
	}
	mark(phase, 1);
	result(*ctr - start);
}

static void pio_loop(uint32_t n)
{
	mark(PH_PIO, 0);
	for (uint32_t i = 0; i < n; i++)
		outl(BENCH_PORT + 4, i);
	mark(PH_PIO, 1);
	result(n);
}

/*
 * Halt until WANT interrupts counted on CTR or the pvclock passes DEADLINE.  The wake
 * timer (50 ms at most per arm) is re-armed only after it fired, so halting costs nothing.
 */
static void halt_until(volatile uint32_t *ctr, uint32_t start, uint32_t want, uint64_t deadline)
{
	uint32_t woken = xen_wake_count - 1;

	cli();
	while ((!ctr || *ctr - start < want) && xen_now() < deadline) {
		if (xen_wake_count != woken) {
			woken = xen_wake_count;
			xen_arm_wake(deadline);
		}
		safe_halt();
		cli();
	}
	lapic_timer_stop();
	sti();
}

/* mode b: the device thread sends M messages, PERIOD µs apart; we only halt and count. */
static void burst(int phase, uint32_t m, uint32_t period_us)
{
	volatile uint32_t *ctr = counter_of(phase);
	uint32_t start = *ctr, sent0 = td_reg(&td, TD_SENT_MSIX);
	uint64_t span = (uint64_t)m * period_us * 1000;

	td_write(&td, TD_COUNT, m);
	td_write(&td, TD_PERIOD, period_us);
	mark(phase, 0);
	td_write(&td, TD_TIMER, target_of(phase));
	/* Late or coalesced messages: give up 200 ms (+ the span again) after the last was due. */
	halt_until(ctr, start, m, xen_now() + 2 * span + XEN_MS(200));
	mark(phase, 1);
	result(*ctr - start);
	if (td_reg(&td, TD_TIMER))			/* still sending: stop it, it's late */
		td_write(&td, TD_TIMER, TD_TIMER_STOP);
	printf("bench_pirq: phase %d: %u sent, %u received\n", phase, td_reg(&td, TD_SENT_MSIX) - sent0,
	       *ctr - start);
}

/*
 * A one-message timer burst on each entry: the device thread gives its vector an irqfd
 * (IrqChip.use_irqfd), and from then on every fire() of it, FIRE's too, writes the
 * eventfd: KVM delivers through the route the chip chose (MSI, or XEN_EVTCHN for a bound
 * PIRQ with KVM's Xen support; none: userspace, as before).
 */
static void prime_irqfds(void)
{
	for (int phase = PH_PLAIN; phase <= PH_PIRQ; phase++) {
		volatile uint32_t *ctr = counter_of(phase);
		uint32_t start = *ctr;
		td_write(&td, TD_COUNT, 1);
		td_write(&td, TD_PERIOD, 100);
		td_write(&td, TD_TIMER, target_of(phase));
		halt_until(ctr, start, 1, xen_now() + XEN_MS(2000));
		if (*ctr == start)
			kit_fail("bench_pirq: phase %d: the one-message burst was not delivered", phase);
	}
}

static void setup(void)
{
	if (!td_find(&td))
		kit_fail("bench_pirq: no PCI test device (--pci-testdev)");

	pic_mask_all();
	kit_set_handler(VEC_PLAIN, plain_isr);
	xen_use_upcall_vector();

	uint32_t pirq;
	long rc = xen_get_free_pirq(MAP_PIRQ_TYPE_MSI, &pirq);
	if (rc)
		kit_fail("bench_pirq: PHYSDEVOP_get_free_pirq: %ld", rc);
	td_msix_ctrl(&td, MSIX_FLAGS_ENABLE | MSIX_FLAGS_MASKALL);
	td_entry_program(&td, ENTRY_PLAIN, KIT_MSI_ADDR(lapic_id()), VEC_PLAIN);	/* left masked */
	td_entry_program(&td, ENTRY_PIRQ, XEN_PIRQ_MSI_ADDR(pirq), XEN_PIRQ_MSI_DATA);
	td_msix_ctrl(&td, MSIX_FLAGS_ENABLE);
	rc = xen_bind_pirq(pirq, 0, &pirq_port);
	if (rc)
		kit_fail("bench_pirq: EVTCHNOP_bind_pirq(%u): %ld", pirq, rc);
	td_entry_mask(&td, ENTRY_PLAIN, false);
	td_entry_mask(&td, ENTRY_PIRQ, false);
	/* Linux (events_base.c __startup_pirq) asks now whether each interrupt needs a
	 * PHYSDEVOP_eoi -- a hypercall, i.e. a userspace exit, per MSI.  An emulated MSI
	 * PIRQ doesn't (xen/pirq.py status_flags), so a Linux guest's fast path stays 0. */
	uint32_t flags = 0;
	rc = xen_pirq_status(pirq, &flags);
	if (rc == 0 && (flags & XENIRQSTAT_needs_eoi))
		kit_fail("bench_pirq: the MSI PIRQ asks for an EOI per interrupt (a userspace exit each)");
	printf("bench_pirq: testdev 00:%02x.0, plain MSI-X -> vector %#x, MSI-X PIRQ %u -> port %u"
	       " (irq_status_query %ld, flags %#x)\n", td.slot, VEC_PLAIN, pirq, pirq_port, rc, flags);
}

void kit_main(void)
{
	printf("bench_pirq: PIRQ-MSI vs plain MSI-X delivery\n");
	xen_test_start("bench_pirq");
	uint64_t mode = xen_cmdline_u64("mode", 0xa);
	uint32_t n = (uint32_t)xen_cmdline_u64("n", 1000), reps = (uint32_t)xen_cmdline_u64("reps", 1);
	uint32_t m = (uint32_t)xen_cmdline_u64("m", 1000), period = (uint32_t)xen_cmdline_u64("period", 100);
	setup();

	if (mode == 0xa) {
		for (uint32_t r = 0; r < reps; r++) {
			pio_loop(n);
			fire_each(PH_IPI_PLAIN, n);
			fire_each(PH_IPI_UPCALL, n);
			fire_each(PH_PLAIN, n);
			fire_each(PH_PIRQ, n);
		}
		prime_irqfds();
		for (uint32_t r = 0; r < reps; r++) {
			fire_each(PH_PLAIN_FD, n);
			fire_each(PH_PIRQ_FD, n);
		}
	} else if (mode == 0xb) {
		for (uint32_t r = 0; r < reps; r++) {
			mark(PH_IDLE, 0);
			halt_until(NULL, 0, 0, xen_now() + (uint64_t)m * period * 1000);
			mark(PH_IDLE, 1);
			result(0);
			burst(PH_PLAIN, m, period);
			burst(PH_PIRQ, m, period);
		}
	} else {
		kit_fail("bench_pirq: mode=%#lx (0xa or 0xb)", (unsigned long)mode);
	}
	xen_pass();
}
