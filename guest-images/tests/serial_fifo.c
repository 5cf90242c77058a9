/*
 * serial_fifo: COM1 as a 16550A (devices/serial.py).
 *
 * 1. Detection as Linux's 8250 autoconfig does it: FCR bit 0 makes IIR bits 7:6
 *    read 11 (16550A), 00 with the FIFOs off.
 * 2. A line sent the 16550A way: one LSR.THRE check per 16 bytes, then TEMT.
 * 3. Receiving with the FIFO at trigger level 8, interrupt driven (I/OAPIC pin 4):
 *    "ready 1" -> the test sends 11 bytes: a received-data interrupt (IIR 0x4);
 *    "ready 2" -> the test sends 3 bytes, under the trigger: the character timeout
 *    interrupt (IIR 0xC) hands them over.
 */
#include "kit.h"

#define IOAPIC_BASE	0xfec00000UL
#define VEC_SERIAL	0x34
#define COM1_IER	(KIT_COM1 + 1)
#define COM1_IIR	(KIT_COM1 + 2)		/* FCR when written */
#define COM1_LSR	(KIT_COM1 + 5)
#define LSR_DR		0x01
#define LSR_THRE	0x20
#define LSR_TEMT	0x40

#define CHECK(c, ...) do { if (!(c)) kit_fail(__VA_ARGS__); } while (0)

static char line[64];
static volatile int len, lines, rdi_irqs, cti_irqs, other_irqs;

static void ioapic_write(unsigned reg, uint32_t v)
{
	*(volatile uint32_t *)IOAPIC_BASE = reg;
	*(volatile uint32_t *)(IOAPIC_BASE + 0x10) = v;
}

static void serial_irq(struct kit_frame *f)
{
	(void)f;
	uint8_t iir;
	while (!((iir = inb(COM1_IIR)) & 0x01)) {
		switch (iir & 0x0f) {
		case 0x04: rdi_irqs++; break;
		case 0x0c: cti_irqs++; break;
		default: other_irqs++; break;
		}
		while (inb(COM1_LSR) & LSR_DR) {
			char c = inb(KIT_COM1);
			if (c == '\n')
				lines++;
			else if (len < (int)sizeof(line) - 1)
				line[len++] = c;
		}
	}
	lapic_eoi();
}

/* The 16550A way: after THRE, up to 16 bytes may go into the TX FIFO. */
static int fifo_write(const char *s)
{
	int lsr_reads = 0;
	while (*s) {
		do
			lsr_reads++;
		while (!(inb(COM1_LSR) & LSR_THRE));
		for (int i = 0; i < 16 && *s; i++)
			outb(KIT_COM1, (uint8_t)*s++);
	}
	do
		lsr_reads++;
	while (!(inb(COM1_LSR) & LSR_TEMT));
	return lsr_reads;
}

static bool got(const char *want)
{
	line[len] = 0;
	for (int i = 0; want[i] || line[i]; i++)
		if (want[i] != line[i])
			return false;
	return true;
}

void kit_main(void)
{
	printf("serial_fifo: COM1 FIFOs\n");
	outb(COM1_IIR, 0x00);
	uint8_t off = inb(COM1_IIR);
	outb(COM1_IIR, 0x07);				/* enable, clear RX and TX */
	uint8_t on = inb(COM1_IIR);
	CHECK((off & 0xc0) == 0 && (on & 0xc0) == 0xc0, "IIR %#x with FIFOs off, %#x on", off, on);
	printf("serial_fifo: 16550A detected (IIR %#x)\n", on);

	const char *msg = "serial_fifo: this line went out sixteen bytes per THRE check\n";
	int reads = fifo_write(msg);
	printf("serial_fifo: %d LSR reads for that line\n", reads);
	CHECK(reads <= 5, "%d LSR reads", reads);

	outb(0x21, 0xff);				/* mask both PICs */
	outb(0xa1, 0xff);
	lapic_enable();
	kit_set_handler(VEC_SERIAL, serial_irq);
	ioapic_write(0x10 + 2 * 4 + 1, lapic_id() << 24);
	ioapic_write(0x10 + 2 * 4, VEC_SERIAL);		/* edge, unmasked */
	outb(COM1_IIR, 0x81);				/* FIFO on, trigger level 8 */
	outb(COM1_IER, 0x01);				/* received data (and timeout) */

	printf("serial_fifo: ready 1\n");
	CHECK(KIT_WAIT_FOR(lines >= 1, 100000), "no first line (%d bytes)", len);
	CHECK(got("0123456789"), "first line '%s'", line);
	CHECK(rdi_irqs >= 1, "no received-data interrupt (%d timeouts)", cti_irqs);
	printf("serial_fifo: trigger level: '%s' (%d data, %d timeout interrupts)\n", line, rdi_irqs, cti_irqs);

	len = 0;
	int cti_before = cti_irqs;
	printf("serial_fifo: ready 2\n");
	CHECK(KIT_WAIT_FOR(lines >= 2, 100000), "no second line (%d bytes)", len);
	CHECK(got("ab"), "second line '%s'", line);
	CHECK(cti_irqs > cti_before, "no character timeout interrupt");
	CHECK(other_irqs == 0, "%d unexpected serial interrupts", other_irqs);
	printf("serial_fifo: character timeout: '%s' (%d timeout interrupts)\n", line, cti_irqs - cti_before);
	kit_pass();
}
