/*
 * pci_intx: a PCI INTx interrupt end to end (vmm run --pci-testdev).
 * Find the test device (1b36:0005), read its interrupt pin and line (the GSI
 * the VMM's "firmware" wrote: 16 + (slot + pin - 1) % 4), program that I/O
 * APIC pin as a PCI interrupt is programmed on a PC — level-triggered, active
 * low — and let the device raise INTA through its BAR0 register.  The handler
 * checks the device really asserts, lowers the line, then EOIs.
 *
 * cmdline "rounds=N" (default 3): how many interrupts in a row.  Each one
 * after the first needs the I/O APIC to see our EOI (Remote IRR), which the
 * split irqchip gets only from a LAPIC that reports EOIs.  With N >= 2 the
 * command register's INTx-disable bit is also checked: it holds the line
 * back (status bit 3 still shows the device's request) until cleared.
 */
#include "kit.h"

#define IOAPIC_BASE	0xfec00000UL
#define VEC_INTX	0x61
#define TEST_VENDOR	0x1b36
#define TEST_DEVICE	0x0005
#define TEST_MAGIC	0x54494350u
#define REG_INTX	0x0
#define REG_ASSERTS	0x4
#define REG_MAGIC	0x8
#define CMD_INTX_DISABLE (1u << 10)
#define STATUS_INTERRUPT (1u << 3)

static uint16_t io;
static volatile int genuine, spurious;

static uint32_t addr_of(int slot, int off)
{
	return 0x80000000u | (uint32_t)slot << 11 | (off & 0xfc);
}

static uint32_t cfg_read32(int slot, int off)
{
	outl(0xcf8, addr_of(slot, off));
	return inl(0xcfc);
}

static uint16_t cfg_read16(int slot, int off)
{
	outl(0xcf8, addr_of(slot, off));
	return inw(0xcfc + (off & 2));
}

static void cfg_write16(int slot, int off, uint16_t v)
{
	outl(0xcf8, addr_of(slot, off));
	outw(0xcfc + (off & 2), v);
}

static void ioapic_write(unsigned reg, uint32_t v)
{
	*(volatile uint32_t *)IOAPIC_BASE = reg;
	*(volatile uint32_t *)(IOAPIC_BASE + 0x10) = v;
}

static void intx_irq(struct kit_frame *f)
{
	(void)f;
	if (inl(io + REG_INTX) & 1) {
		genuine++;
		outl(io + REG_INTX, 0);		/* deassert before the EOI */
	} else {
		spurious++;			/* see the PVM note in ioapic_level.c */
	}
	lapic_eoi();
}

static void settle(void)
{
	sti();
	for (volatile int i = 0; i < 3000; i++)
		;
}

static int cmdline_int(const char *key, int dflt)
{
	const char *s = kit_cmdline();
	size_t n = strlen(key);

	for (; *s; s++) {
		if ((s == kit_cmdline() || s[-1] == ' ') && !memcmp(s, key, n) && s[n] == '=') {
			int v = 0;
			for (s += n + 1; *s >= '0' && *s <= '9'; s++)
				v = v * 10 + (*s - '0');
			return v;
		}
	}
	return dflt;
}

void kit_main(void)
{
	printf("pci_intx: INTA of the PCI test device through the I/O APIC\n");
	int rounds = cmdline_int("rounds", 3);
	int slot;

	for (slot = 0; slot < 32; slot++)
		if (cfg_read32(slot, 0) == (TEST_DEVICE << 16 | TEST_VENDOR))
			break;
	if (slot == 32)
		kit_fail("no PCI test device (run with --pci-testdev)");
	uint32_t intr = cfg_read32(slot, 0x3c);
	int line = intr & 0xff, pin = (intr >> 8) & 0xff;
	io = cfg_read32(slot, 0x10) & ~3u;
	printf("pci_intx: device at 00:%02x.0, pin INT%c, line (GSI) %d, BAR0 %#x\n",
	       slot, 'A' + pin - 1, line, io);
	KIT_ASSERT(pin == 1);
	KIT_ASSERT(line == 16 + (slot + pin - 1) % 4);
	KIT_ASSERT(inl(io + REG_MAGIC) == TEST_MAGIC);
	KIT_ASSERT(!(cfg_read16(slot, 0x04) & CMD_INTX_DISABLE));

	outb(0x21, 0xff);
	outb(0xa1, 0xff);
	lapic_enable();
	kit_set_handler(VEC_INTX, intx_irq);
	ioapic_write(0x10 + 2 * line + 1, lapic_id() << 24);
	ioapic_write(0x10 + 2 * line, VEC_INTX | 1u << 15 | 1u << 13);	/* level, active low */

	for (int r = 1; r <= rounds; r++) {
		outl(io + REG_INTX, 1);
		if (!KIT_WAIT_FOR(genuine >= r, 10000))
			kit_fail("round %d: INTx delivered %d times", r, genuine);
	}
	settle();
	KIT_ASSERT(genuine == rounds);
	KIT_ASSERT(!(inl(io + REG_INTX) & 1));
	printf("pci_intx: %d INTx interrupts on GSI %d (spurious %d)\n", genuine, line, spurious);

	if (rounds >= 2) {
		uint16_t cmd = cfg_read16(slot, 0x04);
		cfg_write16(slot, 0x04, cmd | CMD_INTX_DISABLE);
		outl(io + REG_INTX, 1);
		settle();
		KIT_ASSERT(genuine == rounds);
		KIT_ASSERT(cfg_read16(slot, 0x06) & STATUS_INTERRUPT);
		cfg_write16(slot, 0x04, cmd);
		if (!KIT_WAIT_FOR(genuine > rounds, 10000))
			kit_fail("INTx not delivered after clearing INTx-disable");
		KIT_ASSERT(!(cfg_read16(slot, 0x06) & STATUS_INTERRUPT));
		printf("pci_intx: INTx-disable holds the line back, clearing it delivers\n");
		rounds++;
	}
	KIT_ASSERT(inl(io + REG_ASSERTS) == (uint32_t)rounds);
	kit_pass();
}
