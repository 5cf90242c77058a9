/*
 * pci_msi: MSI and MSI-X of the PCI test device end to end (vmm run --pci-testdev).
 *
 * The device (devices/pci_testdev.py) carries an MSI capability (4 vectors,
 * 64-bit, per-vector masking) and an MSI-X capability (8 entries, table and
 * PBA in BAR4); its BAR0 registers make it send a message now (FIRE), or from
 * a device thread on a timer (TIMER), and count what it sent or left pending.
 * Register offsets and bits: PCI Local Bus spec 3.0 §6.8, Linux
 * include/uapi/linux/pci_regs.h.
 *
 *  1. MSI config space: read-only and writable bits, MME clamped to MMC.
 *  2. MSI to our LAPIC: each FIRE arrives exactly once.
 *  3. Per-vector mask: no interrupt, pending bit set; unmask delivers once.
 *  4. Multiple message enable (4 vectors): vector k sends data | k; a vector
 *     beyond the enabled count is dropped.
 *  5. INTx: suppressed while MSI is enabled, held back by INTx-disable, and
 *     delivered once both are off (one INTx delivery: see pci_intx.c for why
 *     a second one needs EOI reporting in split mode).
 *  6. MSI-X: capability and table/PBA layout, entries reset masked, reserved
 *     bits, 64-bit table accesses, every entry to its own vector, function
 *     mask and entry mask with PBA bits, re-programming an entry, INTx
 *     suppressed while MSI-X is enabled.
 *  7. The device thread (timer): a burst of N messages arrives N times, and
 *     the stop command stops it.
 */
#include "kit.h"

#define IOAPIC_BASE	0xfec00000UL
#define TEST_VENDOR	0x1b36
#define TEST_DEVICE	0x0005
#define TEST_MAGIC	0x54494350u

/* BAR0 registers (devices/pci_testdev.py) */
#define REG_INTX	0x00
#define REG_MAGIC	0x08
#define REG_COUNT	0x10
#define REG_FIRE	0x14
#define REG_PERIOD	0x18
#define REG_TIMER	0x1c
#define REG_SENT_MSI	0x20
#define REG_SENT_MSIX	0x24
#define REG_PENDED_MSI	0x28
#define REG_PENDED_MSIX	0x2c
#define REG_DROPPED	0x30
#define TARGET_MSIX	(1u << 8)
#define TIMER_STOP	(1u << 31)

/* config space */
#define PCI_COMMAND		0x04
#define PCI_STATUS		0x06
#define CMD_INTX_DISABLE	(1u << 10)
#define STATUS_INTERRUPT	(1u << 3)
#define STATUS_CAP_LIST		(1u << 4)
#define PCI_CAP_ID_MSI		0x05
#define PCI_CAP_ID_MSIX		0x11
#define MSI_FLAGS		0x02
#define  MSI_FLAGS_ENABLE	0x0001
#define  MSI_FLAGS_QMASK	0x000e
#define  MSI_FLAGS_QSIZE	0x0070
#define  MSI_FLAGS_64BIT	0x0080
#define  MSI_FLAGS_MASKBIT	0x0100
#define MSI_ADDRESS_LO		0x04
#define MSI_ADDRESS_HI		0x08
#define MSI_DATA_64		0x0c
#define MSI_MASK_64		0x10
#define MSI_PENDING_64		0x14
#define MSIX_FLAGS		0x02
#define  MSIX_FLAGS_QSIZE	0x07ff
#define  MSIX_FLAGS_MASKALL	0x4000
#define  MSIX_FLAGS_ENABLE	0x8000
#define MSIX_TABLE		0x04
#define MSIX_PBA		0x08
#define MSIX_ENTRY_SIZE		16
#define MSIX_ENTRY_DATA		0x8
#define MSIX_ENTRY_CTRL		0xc

/* IDT vectors */
#define VEC_MSI		0x50
#define VEC_MULTI	0x60	/* 0x60-0x63: aligned to 4 for multiple message */
#define VEC_INTX	0x70
#define VEC_MSIX	0x80	/* 0x80-0x87 */
#define VEC_MOVED	0x90

static int slot;
static uint16_t io;
static uint64_t bar4;
static volatile int count[256];
static volatile int intx_count, intx_spurious;

/* ---- config space ---- */
static uint32_t addr_of(int off) { return 0x80000000u | (uint32_t)slot << 11 | (off & 0xfc); }
static uint32_t cfg_read32(int off) { outl(0xcf8, addr_of(off)); return inl(0xcfc); }
static uint16_t cfg_read16(int off) { outl(0xcf8, addr_of(off)); return inw(0xcfc + (off & 2)); }
static uint8_t cfg_read8(int off) { outl(0xcf8, addr_of(off)); return inb(0xcfc + (off & 3)); }
static void cfg_write32(int off, uint32_t v) { outl(0xcf8, addr_of(off)); outl(0xcfc, v); }
static void cfg_write16(int off, uint16_t v) { outl(0xcf8, addr_of(off)); outw(0xcfc + (off & 2), v); }

static int find_cap(int id)
{
	if (!(cfg_read16(PCI_STATUS) & STATUS_CAP_LIST))
		return 0;
	for (int ptr = cfg_read8(0x34) & 0xfc, n = 0; ptr && n < 48; ptr = cfg_read8(ptr + 1) & 0xfc, n++)
		if (cfg_read8(ptr) == id)
			return ptr;
	return 0;
}

/* ---- MSI-X table and PBA (BAR4) ---- */
static volatile uint32_t *mmio32(uint64_t a) { return (volatile uint32_t *)a; }
static volatile uint64_t *mmio64(uint64_t a) { return (volatile uint64_t *)a; }
static uint64_t table, pba;
static uint64_t entry(int e) { return table + (uint64_t)e * MSIX_ENTRY_SIZE; }

/* ---- interrupts ---- */
static void msi_handler(struct kit_frame *f)
{
	count[f->vector]++;
	lapic_eoi();
}

static void intx_handler(struct kit_frame *f)
{
	(void)f;
	if (inl(io + REG_INTX) & 1) {
		intx_count++;
		outl(io + REG_INTX, 0);	/* deassert before the EOI */
	} else {
		intx_spurious++;	/* PVM's LAPIC latches a still-high line once more: see ioapic_level.c */
	}
	lapic_eoi();
}

/* Interrupts on for a while: any interrupt already requested arrives. */
static void settle(void)
{
	sti();
	for (volatile int i = 0; i < 3000; i++)
		;
}

static void ioapic_write(unsigned reg, uint32_t v)
{
	*(volatile uint32_t *)IOAPIC_BASE = reg;
	*(volatile uint32_t *)(IOAPIC_BASE + 0x10) = v;
}

/* FIRE once and wait for VECTOR's handler; then make sure nothing more came. */
static void fire_once(uint32_t target, int vector)
{
	int before = count[vector];

	outl(io + REG_FIRE, target);
	if (!KIT_WAIT_FOR(count[vector] > before, 100))
		kit_fail("target %#x: vector %#x not delivered", target, vector);
	settle();
	if (count[vector] != before + 1)
		kit_fail("target %#x: vector %#x delivered %d times", target, vector, count[vector] - before);
}

static void expect_nothing(int vector, int expected)
{
	settle();
	if (count[vector] != expected)
		kit_fail("vector %#x: %d interrupts, expected %d", vector, count[vector], expected);
}

static void clear_counters(void)
{
	for (int r = REG_SENT_MSI; r <= REG_DROPPED; r += 4)
		outl(io + r, 0);
}

/* ---- 1-4: MSI ---- */
static void test_msi(int msi, uint32_t apic)
{
	uint16_t caps = MSI_FLAGS_64BIT | MSI_FLAGS_MASKBIT | 2 << 1;	/* 4 vectors */

	KIT_ASSERT(cfg_read16(msi + MSI_FLAGS) == caps);
	cfg_write16(msi + MSI_FLAGS, 0xffff);
	/* enable and MME writable; MME 7 > MMC 2 is clamped; the rest read-only */
	KIT_ASSERT(cfg_read16(msi + MSI_FLAGS) == (caps | MSI_FLAGS_ENABLE | 2 << 4));
	cfg_write16(msi + MSI_FLAGS, caps);
	cfg_write32(msi + MSI_ADDRESS_LO, ~0u);
	KIT_ASSERT(cfg_read32(msi + MSI_ADDRESS_LO) == 0xfffffffc);
	cfg_write32(msi + MSI_MASK_64, ~0u);
	KIT_ASSERT(cfg_read32(msi + MSI_MASK_64) == 0xf);
	cfg_write32(msi + MSI_PENDING_64, ~0u);
	KIT_ASSERT(cfg_read32(msi + MSI_PENDING_64) == 0);
	printf("pci_msi: MSI capability at %#x: 4 vectors, 64-bit, per-vector mask\n", msi);

	/* 2. one vector, to our LAPIC: fixed, edge */
	cfg_write32(msi + MSI_ADDRESS_LO, (uint32_t)KIT_MSI_ADDR(apic));
	cfg_write32(msi + MSI_ADDRESS_HI, 0);
	cfg_write16(msi + MSI_DATA_64, VEC_MSI);
	cfg_write32(msi + MSI_MASK_64, 0);
	cfg_write16(msi + MSI_FLAGS, caps | MSI_FLAGS_ENABLE);
	clear_counters();
	for (int i = 0; i < 3; i++)
		fire_once(0, VEC_MSI);
	KIT_ASSERT(count[VEC_MSI] == 3 && inl(io + REG_SENT_MSI) == 3);
	printf("pci_msi: MSI vector %#x: 3 messages, 3 interrupts\n", VEC_MSI);

	/* 3. per-vector mask: 4 messages leave one pending bit; unmasking sends it once */
	cfg_write32(msi + MSI_MASK_64, 1);
	outl(io + REG_COUNT, 4);
	outl(io + REG_FIRE, 0);
	outl(io + REG_COUNT, 1);
	expect_nothing(VEC_MSI, 3);
	KIT_ASSERT(cfg_read32(msi + MSI_PENDING_64) == 1);
	KIT_ASSERT(inl(io + REG_PENDED_MSI) == 4 && inl(io + REG_SENT_MSI) == 3);
	cfg_write32(msi + MSI_MASK_64, 0);
	if (!KIT_WAIT_FOR(count[VEC_MSI] == 4, 100))
		kit_fail("pending MSI not sent on unmask");
	expect_nothing(VEC_MSI, 4);
	KIT_ASSERT(cfg_read32(msi + MSI_PENDING_64) == 0);
	printf("pci_msi: masked vector: no interrupt, pending bit set; unmask delivered it once\n");

	/* 4. multiple message enable: 4 vectors, data 0x60 | k */
	cfg_write16(msi + MSI_FLAGS, caps);
	cfg_write16(msi + MSI_DATA_64, VEC_MULTI);
	cfg_write16(msi + MSI_FLAGS, caps | 2 << 4 | MSI_FLAGS_ENABLE);
	for (int k = 0; k < 4; k++)
		fire_once(k, VEC_MULTI + k);
	/* 2 vectors enabled: vector 3 has no message (dropped), vector 1 still works */
	cfg_write16(msi + MSI_FLAGS, caps | 1 << 4 | MSI_FLAGS_ENABLE);
	outl(io + REG_FIRE, 3);
	expect_nothing(VEC_MULTI + 3, 1);
	KIT_ASSERT(inl(io + REG_DROPPED) == 1);
	fire_once(1, VEC_MULTI + 1);
	printf("pci_msi: multiple message: vectors %#x-%#x, one each; beyond the count dropped\n",
	       VEC_MULTI, VEC_MULTI + 3);
}

/* ---- 5: INTx vs MSI and INTx-disable ---- */
static void test_intx(int msi)
{
	int line = cfg_read8(0x3c);
	uint16_t cmd = cfg_read16(PCI_COMMAND);

	KIT_ASSERT(cfg_read16(msi + MSI_FLAGS) & MSI_FLAGS_ENABLE);
	kit_set_handler(VEC_INTX, intx_handler);
	ioapic_write(0x10 + 2 * line + 1, lapic_id() << 24);
	ioapic_write(0x10 + 2 * line, VEC_INTX | 1u << 15 | 1u << 13);	/* level, active low */

	cfg_write16(PCI_COMMAND, cmd | CMD_INTX_DISABLE);
	outl(io + REG_INTX, 1);				/* the device wants INTx ... */
	settle();
	KIT_ASSERT(!(cfg_read16(PCI_STATUS) & STATUS_INTERRUPT));	/* ... but MSI is on */
	cfg_write16(msi + MSI_FLAGS, cfg_read16(msi + MSI_FLAGS) & ~MSI_FLAGS_ENABLE);
	settle();
	KIT_ASSERT(cfg_read16(PCI_STATUS) & STATUS_INTERRUPT);		/* asserting now, */
	KIT_ASSERT(intx_count == 0);					/* held by INTx-disable */
	cfg_write16(PCI_COMMAND, cmd);
	if (!KIT_WAIT_FOR(intx_count > 0, 100))
		kit_fail("INTx not delivered with MSI and INTx-disable off");
	settle();
	KIT_ASSERT(intx_count == 1);
	KIT_ASSERT(!(cfg_read16(PCI_STATUS) & STATUS_INTERRUPT));
	printf("pci_msi: INTx suppressed while MSI is enabled, held by INTx-disable, then delivered once "
	       "(GSI %d, spurious %d)\n", line, intx_spurious);
}

/* ---- 6-7: MSI-X ---- */
static void program_entry(int e, uint32_t apic, uint32_t vector)
{
	*mmio32(entry(e) + MSIX_ENTRY_CTRL) = 1;			/* mask, as Linux does */
	*mmio64(entry(e)) = KIT_MSI_ADDR(apic);			/* one 64-bit write: address low+high */
	*mmio32(entry(e) + MSIX_ENTRY_DATA) = vector;
	*mmio32(entry(e) + MSIX_ENTRY_CTRL) = 0;
}

static void test_msix(int msix, uint32_t apic)
{
	uint16_t ctrl = cfg_read16(msix + MSIX_FLAGS);
	uint32_t tbl = cfg_read32(msix + MSIX_TABLE), pb = cfg_read32(msix + MSIX_PBA);

	KIT_ASSERT(ctrl == 7);						/* 8 entries, off */
	KIT_ASSERT(tbl == 4 && pb == (0x800 | 4));			/* BAR4 +0, BAR4 +0x800 */
	cfg_write16(msix + MSIX_FLAGS, 0xffff);
	KIT_ASSERT(cfg_read16(msix + MSIX_FLAGS) == (MSIX_FLAGS_ENABLE | MSIX_FLAGS_MASKALL | 7));
	cfg_write16(msix + MSIX_FLAGS, 0);
	cfg_write32(msix + MSIX_TABLE, 0);
	KIT_ASSERT(cfg_read32(msix + MSIX_TABLE) == tbl);
	table = bar4 + (tbl & ~7u);
	pba = bar4 + (pb & ~7u);

	for (int e = 0; e < 8; e++)					/* reset state: masked */
		KIT_ASSERT(*mmio64(entry(e)) == 0 && *mmio32(entry(e) + MSIX_ENTRY_DATA) == 0 &&
			   *mmio32(entry(e) + MSIX_ENTRY_CTRL) == 1);
	*mmio32(entry(0)) = ~0u;					/* reserved bits read 0 */
	*mmio32(entry(0) + MSIX_ENTRY_CTRL) = ~0u;
	KIT_ASSERT(*mmio32(entry(0)) == 0xfffffffc && *mmio32(entry(0) + MSIX_ENTRY_CTRL) == 1);
	*mmio32(pba) = ~0u;						/* the PBA is read-only */
	KIT_ASSERT(*mmio64(pba) == 0);
	for (int e = 0; e < 8; e++)
		program_entry(e, apic, VEC_MSIX + e);
	KIT_ASSERT(*mmio64(entry(5)) == KIT_MSI_ADDR(apic));
	KIT_ASSERT(*mmio64(entry(5) + MSIX_ENTRY_DATA) == VEC_MSIX + 5);	/* data | ctrl << 32 */
	printf("pci_msi: MSI-X capability at %#x: 8 entries, table BAR4+0, PBA BAR4+0x800\n", msix);

	/* INTx stays off while MSI-X is enabled (INTx-disable clear) */
	cfg_write16(msix + MSIX_FLAGS, MSIX_FLAGS_ENABLE);
	outl(io + REG_INTX, 1);
	KIT_ASSERT(!(cfg_read16(PCI_STATUS) & STATUS_INTERRUPT));
	settle();
	KIT_ASSERT(intx_count == 1);
	outl(io + REG_INTX, 0);

	clear_counters();
	for (int e = 0; e < 8; e++)
		fire_once(TARGET_MSIX | e, VEC_MSIX + e);
	KIT_ASSERT(inl(io + REG_SENT_MSIX) == 8);
	printf("pci_msi: MSI-X entries 0-7: vectors %#x-%#x, one each\n", VEC_MSIX, VEC_MSIX + 7);

	/* function mask */
	cfg_write16(msix + MSIX_FLAGS, MSIX_FLAGS_ENABLE | MSIX_FLAGS_MASKALL);
	outl(io + REG_FIRE, TARGET_MSIX | 2);
	expect_nothing(VEC_MSIX + 2, 1);
	KIT_ASSERT(*mmio64(pba) == 1u << 2 && inl(io + REG_PENDED_MSIX) == 1);
	cfg_write16(msix + MSIX_FLAGS, MSIX_FLAGS_ENABLE);
	if (!KIT_WAIT_FOR(count[VEC_MSIX + 2] == 2, 100))
		kit_fail("pending MSI-X not sent when the function mask cleared");
	expect_nothing(VEC_MSIX + 2, 2);
	KIT_ASSERT(*mmio64(pba) == 0);

	/* entry mask */
	*mmio32(entry(3) + MSIX_ENTRY_CTRL) = 1;
	outl(io + REG_FIRE, TARGET_MSIX | 3);
	expect_nothing(VEC_MSIX + 3, 1);
	KIT_ASSERT(*mmio32(pba) == 1u << 3 && inl(io + REG_PENDED_MSIX) == 2);
	*mmio32(entry(3) + MSIX_ENTRY_CTRL) = 0;
	if (!KIT_WAIT_FOR(count[VEC_MSIX + 3] == 2, 100))
		kit_fail("pending MSI-X not sent when the entry was unmasked");
	expect_nothing(VEC_MSIX + 3, 2);
	KIT_ASSERT(*mmio64(pba) == 0);
	printf("pci_msi: function mask and entry mask: PBA bit set, sent once on unmask\n");

	/* re-programming an entry */
	program_entry(1, apic, VEC_MOVED);
	fire_once(TARGET_MSIX | 1, VEC_MOVED);
	KIT_ASSERT(count[VEC_MSIX + 1] == 1);
	printf("pci_msi: entry 1 moved to vector %#x\n", VEC_MOVED);

	/*
	 * 7. the device thread: a burst of 5, 10 ms apart.  Edge messages to one
	 * vector coalesce in the LAPIC's IRR if the vCPU doesn't take each before
	 * the next arrives, so the period leaves the (emulated, shared-host) vCPU
	 * ample time; we spin rather than halt so that a lost one fails, not hangs.
	 */
	clear_counters();
	outl(io + REG_COUNT, 5);
	outl(io + REG_PERIOD, 10000);
	outl(io + REG_TIMER, TARGET_MSIX | 0);
	sti();
	if (!KIT_SPIN_UNTIL(count[VEC_MSIX] >= 6 && inl(io + REG_TIMER) == 0, 20000000000ull))
		kit_fail("timer burst: %d interrupts, %u messages sent, %u to go", count[VEC_MSIX] - 1,
			 inl(io + REG_SENT_MSIX), inl(io + REG_TIMER));
	expect_nothing(VEC_MSIX, 6);
	KIT_ASSERT(inl(io + REG_SENT_MSIX) == 5);
	printf("pci_msi: timer burst: 5 messages, 5 interrupts\n");

	/* a long burst, stopped by the guest */
	outl(io + REG_COUNT, 1000);
	outl(io + REG_PERIOD, 2000);
	outl(io + REG_TIMER, TARGET_MSIX | 4);
	if (!KIT_WAIT_FOR(count[VEC_MSIX + 4] >= 3, 1000))
		kit_fail("long timer burst did not start");
	outl(io + REG_TIMER, TIMER_STOP);
	KIT_ASSERT(inl(io + REG_TIMER) == 0);
	settle();
	int got = count[VEC_MSIX + 4];
	uint32_t sent = inl(io + REG_SENT_MSIX) - 5;
	for (int i = 0; i < 5; i++)
		expect_nothing(VEC_MSIX + 4, got);
	KIT_ASSERT(inl(io + REG_SENT_MSIX) - 5 == sent);
	KIT_ASSERT(sent >= (uint32_t)got - 1);		/* 2 ms apart: some may have coalesced */
	printf("pci_msi: timer stopped after %u messages\n", sent);

	cfg_write16(msix + MSIX_FLAGS, 0);
}

void kit_main(void)
{
	printf("pci_msi: MSI and MSI-X of the PCI test device\n");
	for (slot = 0; slot < 32; slot++)
		if (cfg_read32(0) == (TEST_DEVICE << 16 | TEST_VENDOR))
			break;
	if (slot == 32)
		kit_fail("no PCI test device (run with --pci-testdev)");
	io = cfg_read32(0x10) & ~3u;
	bar4 = cfg_read32(0x20) & ~0xfu;
	KIT_ASSERT(inl(io + REG_MAGIC) == TEST_MAGIC);
	KIT_ASSERT(bar4 != 0 && (cfg_read16(PCI_COMMAND) & 3) == 3);
	int msi = find_cap(PCI_CAP_ID_MSI), msix = find_cap(PCI_CAP_ID_MSIX);
	KIT_ASSERT(msi && msix);
	printf("pci_msi: device at 00:%02x.0, BAR0 %#x, BAR4 %#lx\n", slot, io, bar4);

	outb(0x21, 0xff);
	outb(0xa1, 0xff);
	lapic_enable();
	for (int v = VEC_MSI; v <= VEC_MOVED; v++)
		if (v != VEC_INTX)
			kit_set_handler(v, msi_handler);
	uint32_t apic = lapic_id();

	test_msi(msi, apic);
	test_intx(msi);
	test_msix(msix, apic);
	kit_pass();
}
