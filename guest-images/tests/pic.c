/*
 * pic: the 8259A pair (devices/pic.py, --irqchip split) reaching the CPU as ExtINT
 * through the LAPIC's LINT0, the way Linux with "noapic" takes its interrupts (XT-PIC).
 *
 * 1. Linux's init_8259A: ICW1-4 remap IRQ 0-7 to 0x20, IRQ 8-15 to 0x28.  LVT0 in ExtINT
 *    mode, the I/OAPIC's pins left masked.
 * 2. PIT channel 0 at 100 Hz on IRQ 0: ticks arrive as vector 0x20 and are ended with an
 *    EOI to the master (no LAPIC EOI: an ExtINT doesn't go through the LAPIC's ISR).
 * 3. Masking IRQ 0 in the IMR stops the ticks; unmasking brings them back.
 * 4. A level-triggered IRQ (ELCR): the testdev holds GSI 10 (slave IRQ 2) high; it is
 *    requested again after each EOI while high, and not after the line drops: exactly 3.
 * Time is measured with PIT channel 2 (a 50 ms mode-0 countdown), never the TSC.
 */
#include "kit.h"

#define PIT_CH0		0x40
#define PIT_CH2		0x42
#define PIT_CMD		0x43
#define PORT61		0x61
#define PIT_HZ		1193182
#define VEC_BASE	0x20		/* IRQ 0 */
#define VEC_BASE2	0x28		/* IRQ 8 */
#define GSI_LEVEL	10

#define CHECK(c, ...) do { if (!(c)) kit_fail(__VA_ARGS__); } while (0)

static volatile int ticks, level_irqs;

static void timer_irq(struct kit_frame *f)
{
	(void)f;
	ticks++;
	outb(PIC1_CMD, PIC_EOI);
}

static void level_irq(struct kit_frame *f)
{
	(void)f;
	if (++level_irqs == 3)
		testdev_set_gsi(GSI_LEVEL, 0);
	outb(PIC2_CMD, PIC_EOI);
	outb(PIC1_CMD, PIC_EOI);
}

static void load(uint16_t port, uint8_t control, uint16_t count)
{
	outb(PIT_CMD, control);
	outb(port, count & 0xff);
	outb(port, count >> 8);
}

/* ~50 ms per n, interrupts open: a tick that should (not) come has the time to. */
static void sleep_ms50(int n)
{
	sti();
	while (n--) {
		outb(PORT61, (inb(PORT61) & ~0x02) | 0x01);
		load(PIT_CH2, 0xb0, PIT_HZ / 20);
		for (int polls = 0; !(inb(PORT61) & 0x20); polls++)
			if (polls > 10000000)
				kit_fail("OUT2 never went high");
	}
	cli();
}

static void init_8259a(void)		/* arch/x86/kernel/i8259.c init_8259A(0) */
{
	outb(PIC1_DATA, 0xff);
	outb(PIC2_DATA, 0xff);
	outb(PIC1_CMD, 0x11);		/* ICW1: edge, cascade, ICW4 */
	outb(PIC1_DATA, VEC_BASE);	/* ICW2 */
	outb(PIC1_DATA, 1 << 2);	/* ICW3: slave on IRQ 2 */
	outb(PIC1_DATA, 0x01);		/* ICW4: 8086, normal EOI */
	outb(PIC2_CMD, 0x11);
	outb(PIC2_DATA, VEC_BASE2);
	outb(PIC2_DATA, 2);		/* ICW3: slave id 2 */
	outb(PIC2_DATA, 0x01);
	outb(PIC1_DATA, 0xff);
	outb(PIC2_DATA, 0xff);
}

void kit_main(void)
{
	printf("pic: 8259A pair, ExtINT through LINT0\n");
	init_8259a();
	CHECK(inb(PIC1_DATA) == 0xff && inb(PIC2_DATA) == 0xff, "IMRs %#x %#x", inb(PIC1_DATA), inb(PIC2_DATA));
	lapic_enable();
	lapic_write(APIC_LVT0, LVT_EXTINT);		/* unmasked, ExtINT */
	kit_set_handler(VEC_BASE, timer_irq);
	kit_set_handler(VEC_BASE2 + 2, level_irq);

	load(PIT_CH0, 0x34, PIT_HZ / 100);		/* mode 2, 100 Hz */
	outb(PIC1_DATA, 0xfe);				/* unmask IRQ 0 */
	CHECK(KIT_WAIT_FOR(ticks >= 5, 1000), "only %d ticks", ticks);
	printf("pic: %d PIT ticks as ExtINT vector %#x\n", ticks, VEC_BASE);

	outb(PIC1_DATA, 0xff);				/* IMR: mask IRQ 0 */
	sleep_ms50(1);					/* one already requested may land */
	int t = ticks;
	sleep_ms50(2);
	CHECK(ticks == t, "%d ticks through a masked IRQ 0", ticks - t);
	outb(PIC1_DATA, 0xfe);
	CHECK(KIT_WAIT_FOR(ticks >= t + 3, 1000), "no ticks after unmasking");
	outb(PIC1_DATA, 0xff);
	printf("pic: IMR masking stops the ticks, unmasking brings them back\n");

	outb(ELCR2, 1 << (GSI_LEVEL - 8));		/* IRQ 10 level-triggered */
	CHECK(inb(ELCR2) == 1 << (GSI_LEVEL - 8), "ELCR2 %#x", inb(ELCR2));
	outb(PIC2_DATA, (uint8_t)~(1 << (GSI_LEVEL - 8)));
	outb(PIC1_DATA, (uint8_t)~(1 << 2));		/* the cascade */
	testdev_set_gsi(GSI_LEVEL, 1);
	CHECK(KIT_WAIT_FOR(level_irqs >= 3, 1000), "level IRQ delivered %d times, want 3", level_irqs);
	sleep_ms50(1);
	CHECK(level_irqs == 3, "level IRQ delivered %d times after the line dropped", level_irqs);
	printf("pic: level IRQ 10 re-requested while high: %d interrupts\n", level_irqs);
	kit_pass();
}
