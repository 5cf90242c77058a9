/*
 * echo: serial input, interrupt driven.  COM1's IRQ 4 goes through the
 * I/OAPIC (pin 4 -> vector 0x34) to this CPU; the handler drains the receive
 * buffer.  Reads one line from the VMM's stdin and prints it back.
 */
#include "kit.h"

#define IOAPIC_BASE	0xfec00000UL
#define VEC_SERIAL	0x34

static char line[64];
static volatile int len, done, irqs;

static void ioapic_write(unsigned reg, uint32_t v)
{
	*(volatile uint32_t *)IOAPIC_BASE = reg;
	*(volatile uint32_t *)(IOAPIC_BASE + 0x10) = v;
}

static void serial_irq(struct kit_frame *f)
{
	(void)f;
	irqs++;
	while (inb(KIT_COM1 + 5) & 0x01) {		/* LSR.DR */
		char c = inb(KIT_COM1);
		if (c == '\n' || c == '\r')
			done = 1;
		else if (len < (int)sizeof(line) - 1)
			line[len++] = c;
	}
	lapic_eoi();
}

void kit_main(void)
{
	printf("echo: waiting for a line on COM1\n");
	outb(0x21, 0xff);				/* mask both PICs */
	outb(0xa1, 0xff);
	lapic_enable();
	kit_set_handler(VEC_SERIAL, serial_irq);
	ioapic_write(0x10 + 2 * 4 + 1, lapic_id() << 24);	/* RTE 4 high: dest */
	ioapic_write(0x10 + 2 * 4, VEC_SERIAL);		/* fixed, edge, unmasked */
	outb(KIT_COM1 + 1, 0x01);			/* IER: received data */
	if (!KIT_WAIT_FOR(done, 100000))
		kit_fail("no complete line (got %d bytes, %d irqs)", len, irqs);
	line[len] = 0;
	printf("echo: got '%s' (%d irqs)\n", line, irqs);
	KIT_ASSERT(irqs > 0);
	kit_pass();
}
