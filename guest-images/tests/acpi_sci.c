/*
 * acpi_sci: the ACPI fixed hardware of devices/acpi_pm.py and its SCI, the way an OS
 * uses them (ACPI 6.x §4.8).
 *
 * 1. The FADT (RSDP -> XSDT -> FACP): SCI_INT, PM1a_EVT_BLK, PM1a_CNT_BLK, PM_TMR_BLK.
 *    SCI_EN reads 1 (SMI_CMD is 0: no SMM, always in ACPI mode).
 * 2. The PM timer advances at 3.579545 MHz: counted across a 50 ms PIT channel 2
 *    countdown (host time on both sides), 24 bits wide.
 * 3. The SCI through the I/O APIC: pin SCI_INT programmed level-triggered, active high
 *    (the MADT's interrupt source override), TMR_STS cleared, TMR_EN set: the SCI comes
 *    when bit 23 of the count changes (within 2.35 s).  The handler sees TMR_STS, clears
 *    it (write 1) and EOIs: the line has dropped, so no second SCI follows (no storm).
 *    Then TMR_EN off.  (An emulating host KVM whose LAPIC reports the EOI of a level
 *    vector at delivery lets the split irqchip's I/OAPIC re-deliver once while the line
 *    is still high: the handler then finds no status bit and counts it as spurious;
 *    pci_intx.c has the same note.  The test allows that one on such a host only.)
 *
 * Command line "pitref": check the PM timer's rate against PIT channel 2 (ours, with
 * --irqchip split; KVM's in-kernel PIT's channel 2 is no reference on an emulating host).
 */
#include "kit.h"

#define PIT_CH2		0x42
#define PIT_CMD		0x43
#define PORT61		0x61
#define PIT_HZ		1193182
#define PM_TIMER_HZ	3579545
#define IOAPIC_BASE	0xfec00000UL
#define VEC_SCI		0x59

#define TMR_STS		(1u << 0)
#define PWRBTN_STS	(1u << 8)
#define TMR_EN		(1u << 0)
#define SCI_EN		(1u << 0)

#define CHECK(c, ...) do { if (!(c)) kit_fail(__VA_ARGS__); } while (0)

static uint16_t pm1_sts, pm1_en, pm1_cnt, pm_tmr;
static volatile int scis, tmr_events, spurious;
static volatile uint16_t last_sts;

static void sci_irq(struct kit_frame *f)
{
	uint16_t sts = inw(pm1_sts);

	(void)f;
	last_sts = sts;
	if (sts & TMR_STS) {
		scis++;
		tmr_events++;
	} else {
		spurious++;		/* see below: an EOI the host reported at delivery */
	}
	outw(pm1_sts, sts & (TMR_STS | PWRBTN_STS));	/* write 1 to clear: the line drops */
	lapic_eoi();
}

static void ioapic_write(unsigned reg, uint32_t v)
{
	*(volatile uint32_t *)IOAPIC_BASE = reg;
	*(volatile uint32_t *)(IOAPIC_BASE + 0x10) = v;
}

/* ~50 ms of PIT channel 2 (mode 0, gate on, speaker off); OUT2 goes high at the end. */
static void pit_50ms_start(void)
{
	outb(PORT61, (inb(PORT61) & ~0x02) | 0x01);
	outb(PIT_CMD, 0xb0);
	outb(PIT_CH2, (PIT_HZ / 20) & 0xff);
	outb(PIT_CH2, (PIT_HZ / 20) >> 8);
}

static void pit_50ms_wait(void)
{
	for (long polls = 0; !(inb(PORT61) & 0x20); polls++)
		if (polls > 10000000)
			kit_fail("OUT2 never went high");
}

static const uint8_t *find_table(const char *sig)
{
	const struct hvm_start_info *si = kit_start_info();
	const uint8_t *rsdp, *xsdt;
	uint64_t xsdt_addr;
	uint32_t len;

	KIT_ASSERT(si && si->rsdp_paddr);
	rsdp = (const uint8_t *)(uintptr_t)si->rsdp_paddr;
	KIT_ASSERT(!memcmp(rsdp, "RSD PTR ", 8));
	memcpy(&xsdt_addr, rsdp + 24, 8);
	xsdt = (const uint8_t *)(uintptr_t)xsdt_addr;
	memcpy(&len, xsdt + 4, 4);
	for (uint32_t off = 36; off + 8 <= len; off += 8) {
		uint64_t addr;

		memcpy(&addr, xsdt + off, 8);
		if (!memcmp((const void *)(uintptr_t)addr, sig, 4))
			return (const uint8_t *)(uintptr_t)addr;
	}
	kit_fail("no %s table", sig);
}

static uint32_t rd32(const uint8_t *p, unsigned off)
{
	uint32_t v;

	memcpy(&v, p + off, 4);
	return v;
}

void kit_main(void)
{
	const uint8_t *fadt;
	unsigned sci;

	printf("acpi_sci: PM1 blocks, PM timer and the SCI\n");
	fadt = find_table("FACP");
	sci = fadt[46] | fadt[47] << 8;
	pm1_sts = (uint16_t)rd32(fadt, 56);
	pm1_en = pm1_sts + fadt[88] / 2;		/* PM1_EVT_LEN: status, then enable */
	pm1_cnt = (uint16_t)rd32(fadt, 64);
	pm_tmr = (uint16_t)rd32(fadt, 76);
	printf("acpi_sci: SCI_INT %u PM1_STS %#x PM1_EN %#x PM1_CNT %#x PM_TMR %#x\n",
	       sci, pm1_sts, pm1_en, pm1_cnt, pm_tmr);
	CHECK(sci == 9 && pm1_sts && pm1_cnt && pm_tmr && fadt[88] == 4, "FADT blocks");
	CHECK(inw(pm1_cnt) & SCI_EN, "SCI_EN is clear: PM1_CNT %#x", inw(pm1_cnt));

	/* 2. the PM timer against 50 ms of PIT channel 2 */
	uint32_t t0 = inl(pm_tmr), t1;
	pit_50ms_start();
	pit_50ms_wait();
	t1 = inl(pm_tmr);
	CHECK(!((t0 | t1) >> 24), "PM_TMR wider than 24 bits: %#x %#x", t0, t1);
	uint32_t ticks = (t1 - t0) & 0xffffff;
	printf("acpi_sci: PM timer advanced %u ticks in 50 ms of PIT (expect ~%u)\n", ticks, PM_TIMER_HZ / 20);
	if (kit_cmdline_has("pitref"))
		CHECK(ticks > PM_TIMER_HZ / 20 * 8 / 10 && ticks < PM_TIMER_HZ / 20 * 15 / 10,
		      "PM timer rate off: %u ticks", ticks);
	else
		CHECK(ticks > 0, "PM timer did not advance");

	/* 3. the SCI: I/O APIC pin 9, level, active high; the 8259s masked */
	outb(0x21, 0xff);
	outb(0xa1, 0xff);
	lapic_enable();
	kit_set_handler(VEC_SCI, sci_irq);
	ioapic_write(0x10 + 2 * sci + 1, lapic_id() << 24);
	ioapic_write(0x10 + 2 * sci, VEC_SCI | 1u << 15);	/* level, active high, unmasked */

	outw(pm1_en, 0);
	outw(pm1_sts, TMR_STS | PWRBTN_STS);
	CHECK(!(inw(pm1_sts) & TMR_STS), "TMR_STS did not clear: %#x", inw(pm1_sts));
	outw(pm1_en, TMR_EN);
	CHECK(inw(pm1_en) == TMR_EN, "PM1_EN reads %#x", inw(pm1_en));
	/* bit 23 changes within 2^23 ticks (2.34 s); halts end on any interrupt: only ours is on */
	if (!KIT_WAIT_FOR(scis >= 1, 100))
		kit_fail("no SCI in time (PM1_STS %#x)", inw(pm1_sts));
	CHECK(tmr_events == 1 && (last_sts & TMR_STS), "SCI without TMR_STS: %#x", last_sts);
	printf("acpi_sci: SCI on TMR_STS (PM1_STS was %#x), cleared by the handler\n", last_sts);

	/* the line dropped: no further SCI while TMR_STS stays clear (the next is 2.34 s away) */
	pit_50ms_start();
	sti();
	pit_50ms_wait();
	pit_50ms_start();
	pit_50ms_wait();
	cli();
	CHECK(scis == 1 && spurious <= 1, "%d SCIs (%d spurious) after the status was cleared: a storm",
	      scis, spurious);
	CHECK(!(inw(pm1_sts) & TMR_STS), "TMR_STS set again at once: %#x", inw(pm1_sts));
	outw(pm1_en, 0);
	printf("acpi_sci: no SCI storm after the write-1-to-clear; %d SCI (spurious %d)\n", scis, spurious);
	kit_pass();
}
