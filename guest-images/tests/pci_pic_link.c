/*
 * pci_pic_link: a PCI INTx through an ACPI interrupt link onto an ISA IRQ of the 8259s,
 * the way Linux with "noapic" routes it (vmm run --pci-testdev).
 *
 * What the DSDT's AML does (vmm/boot/acpi.py), done directly on the router's ports
 * (devices/pci.py PciIrqRouter):
 *   \_PIC(0)        PICF = 0: the PIC model; the _PRT now names LNKA-LNKD
 *   LNKx._SRS(11)   PRQx = 11: link x (the test device's INTA: (slot + 0) % 4) on IRQ 11
 * and what Linux's acpi_register_gsi_pic does: IRQ 11 level-triggered in the ELCR.
 * Then the 8259s as Linux's init_8259A programs them (IRQ 8-15 at 0x28), LVT0 ExtINT.
 *
 * 1. The routes read back, and the interrupt-line register says 11 (firmware's duty).
 * 2. INTA raised through BAR0 arrives as vector 0x28 + 3; the handler checks the device
 *    asserts, deasserts it, EOIs slave then master.  Three rounds.
 * 3. _DIS (PRQx = 0x80): a raised INTA reaches nothing; _SRS again: it is delivered.
 * 4. \_PIC(1) (APIC model): INTA goes to GSI 16 + x on the (masked) I/O APIC, nothing
 *    reaches IRQ 11.
 */
#include "kit.h"

#define ROUTER		0x610		/* PICF, then PRQA-PRQD */
#define PIRQ_DISABLED	0x80
#define LINK_IRQ	11
#define VEC_BASE	0x20
#define VEC_BASE2	0x28
#define TEST_VENDOR	0x1b36
#define TEST_DEVICE	0x0005
#define REG_INTX	0x0
#define STATUS_INTERRUPT (1u << 3)

#define CHECK(c, ...) do { if (!(c)) kit_fail(__VA_ARGS__); } while (0)

static uint16_t io;
static volatile int genuine, spurious;

static uint32_t cfg_read32(int slot, int off)
{
	outl(0xcf8, 0x80000000u | (uint32_t)slot << 11 | (off & 0xfc));
	return inl(0xcfc);
}

static void link_irq(struct kit_frame *f)
{
	(void)f;
	if (inl(io + REG_INTX) & 1) {
		genuine++;
		outl(io + REG_INTX, 0);		/* deassert before the EOI */
	} else {
		spurious++;
	}
	outb(PIC2_CMD, PIC_EOI);
	outb(PIC1_CMD, PIC_EOI);
}

static void init_8259a(void)		/* arch/x86/kernel/i8259.c init_8259A(0) */
{
	outb(PIC1_DATA, 0xff);
	outb(PIC2_DATA, 0xff);
	outb(PIC1_CMD, 0x11);
	outb(PIC1_DATA, VEC_BASE);
	outb(PIC1_DATA, 1 << 2);
	outb(PIC1_DATA, 0x01);
	outb(PIC2_CMD, 0x11);
	outb(PIC2_DATA, VEC_BASE2);
	outb(PIC2_DATA, 2);
	outb(PIC2_DATA, 0x01);
	outb(PIC1_DATA, 0xff);
	outb(PIC2_DATA, 0xff);
}

/* A few thousand iterations with interrupts open: a delivery that should (not) come has the time to. */
static void settle(void)
{
	sti();
	for (volatile int i = 0; i < 20000; i++)
		;
	cli();
}

void kit_main(void)
{
	int slot, link;

	printf("pci_pic_link: PCI INTA through an interrupt link onto the 8259s\n");
	for (slot = 0; slot < 32; slot++)
		if (cfg_read32(slot, 0) == (TEST_DEVICE << 16 | TEST_VENDOR))
			break;
	if (slot == 32)
		kit_fail("no PCI test device (run with --pci-testdev)");
	io = cfg_read32(slot, 0x10) & ~3u;
	link = slot % 4;			/* INTA: (slot + pin - 1) % 4 */
	CHECK(((cfg_read32(slot, 0x3c) >> 8) & 0xff) == 1, "not INTA");
	CHECK(inb(ROUTER) == 1, "PICF resets to %#x, want 1 (APIC)", inb(ROUTER));
	CHECK(inb(ROUTER + 1 + link) == PIRQ_DISABLED, "link resets to %#x", inb(ROUTER + 1 + link));
	CHECK((cfg_read32(slot, 0x3c) & 0xff) == 16 + (unsigned)link, "APIC-mode interrupt line %u",
	      cfg_read32(slot, 0x3c) & 0xff);

	outb(ROUTER, 0);			/* \_PIC(0) */
	outb(ROUTER + 1 + link, LINK_IRQ);	/* LNKx._SRS: IRQ 11 */
	CHECK(inb(ROUTER) == 0 && inb(ROUTER + 1 + link) == LINK_IRQ, "routes read back %#x %#x",
	      inb(ROUTER), inb(ROUTER + 1 + link));
	CHECK((cfg_read32(slot, 0x3c) & 0xff) == LINK_IRQ, "interrupt line %u after _SRS",
	      cfg_read32(slot, 0x3c) & 0xff);
	printf("pci_pic_link: device at 00:%02x.0 INTA -> LNK%c -> IRQ %d (PIC model)\n",
	       slot, 'A' + link, LINK_IRQ);

	init_8259a();
	outb(ELCR2, 1 << (LINK_IRQ - 8));	/* level: acpi_register_gsi_pic's elcr_set_level_irq */
	lapic_enable();
	lapic_write(APIC_LVT0, LVT_EXTINT);
	kit_set_handler(VEC_BASE2 + LINK_IRQ - 8, link_irq);
	outb(PIC2_DATA, (uint8_t)~(1 << (LINK_IRQ - 8)));
	outb(PIC1_DATA, (uint8_t)~(1 << 2));	/* the cascade */

	for (int r = 1; r <= 3; r++) {
		outl(io + REG_INTX, 1);
		if (!KIT_WAIT_FOR(genuine >= r, 10000))
			kit_fail("round %d: INTx delivered %d times", r, genuine);
	}
	settle();
	CHECK(genuine == 3 && spurious == 0, "%d INTx, %d spurious", genuine, spurious);
	printf("pci_pic_link: 3 INTx as ExtINT vector %#x on IRQ %d\n", VEC_BASE2 + LINK_IRQ - 8, LINK_IRQ);

	outb(ROUTER + 1 + link, inb(ROUTER + 1 + link) | PIRQ_DISABLED);	/* LNKx._DIS */
	outl(io + REG_INTX, 1);
	settle();
	CHECK(genuine == 3, "INTx delivered through a disabled link");
	CHECK(cfg_read32(slot, 0x04) >> 16 & STATUS_INTERRUPT, "the device does not request");
	outb(ROUTER + 1 + link, LINK_IRQ);				/* LNKx._SRS */
	if (!KIT_WAIT_FOR(genuine >= 4, 10000))
		kit_fail("INTx not delivered once the link is enabled again");
	printf("pci_pic_link: a disabled link holds INTx back, enabling it delivers\n");

	outb(ROUTER, 1);			/* \_PIC(1): GSI 16 + link, the I/O APIC's (masked) */
	CHECK((cfg_read32(slot, 0x3c) & 0xff) == 16 + (unsigned)link, "interrupt line after _PIC(1)");
	outl(io + REG_INTX, 1);
	settle();
	CHECK(genuine == 4 && spurious == 0, "APIC model: INTx reached IRQ %d (%d, %d)", LINK_IRQ, genuine, spurious);
	outl(io + REG_INTX, 0);
	printf("pci_pic_link: APIC model: INTx leaves IRQ %d alone\n", LINK_IRQ);
	kit_pass();
}
