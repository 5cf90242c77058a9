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
#include "pci_testdev.h"

#define IOAPIC_BASE	0xfec00000UL

/* IDT vectors */
#define VEC_MSI		0x50
#define VEC_MULTI	0x60	/* 0x60-0x63: aligned to 4 for multiple message */
#define VEC_INTX	0x70
#define VEC_MSIX	0x80	/* 0x80-0x87 */
#define VEC_MOVED	0x90

static struct testdev td;
static volatile int count[256];
static volatile int intx_count, intx_spurious;

/* ---- interrupts ---- */
static void msi_handler(struct kit_frame *f)
{
	count[f->vector]++;
	lapic_eoi();
}

static void intx_handler(struct kit_frame *f)
{
	(void)f;
	if (td_reg(&td, TD_INTX) & 1) {
		intx_count++;
		td_write(&td, TD_INTX, 0);	/* deassert before the EOI */
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

	td_write(&td, TD_FIRE, target);
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

/* ---- 1-4: MSI ---- */
static void test_msi(int msi, uint32_t apic)
{
	uint16_t caps = MSI_FLAGS_64BIT | MSI_FLAGS_MASKBIT | 2 << 1;	/* 4 vectors */

	KIT_ASSERT(td_cfg_read16(&td, msi + MSI_FLAGS) == caps);
	td_cfg_write16(&td, msi + MSI_FLAGS, 0xffff);
	/* enable and MME writable; MME 7 > MMC 2 is clamped; the rest read-only */
	KIT_ASSERT(td_cfg_read16(&td, msi + MSI_FLAGS) == (caps | MSI_FLAGS_ENABLE | 2 << 4));
	td_cfg_write16(&td, msi + MSI_FLAGS, caps);
	td_cfg_write32(&td, msi + MSI_ADDRESS_LO, ~0u);
	KIT_ASSERT(td_cfg_read32(&td, msi + MSI_ADDRESS_LO) == 0xfffffffc);
	td_cfg_write32(&td, msi + MSI_MASK_64, ~0u);
	KIT_ASSERT(td_cfg_read32(&td, msi + MSI_MASK_64) == 0xf);
	td_cfg_write32(&td, msi + MSI_PENDING_64, ~0u);
	KIT_ASSERT(td_cfg_read32(&td, msi + MSI_PENDING_64) == 0);
	printf("pci_msi: MSI capability at %#x: 4 vectors, 64-bit, per-vector mask\n", msi);

	/* 2. one vector, to our LAPIC: fixed, edge */
	td_cfg_write32(&td, msi + MSI_ADDRESS_LO, (uint32_t)KIT_MSI_ADDR(apic));
	td_cfg_write32(&td, msi + MSI_ADDRESS_HI, 0);
	td_cfg_write16(&td, msi + MSI_DATA_64, VEC_MSI);
	td_cfg_write32(&td, msi + MSI_MASK_64, 0);
	td_cfg_write16(&td, msi + MSI_FLAGS, caps | MSI_FLAGS_ENABLE);
	td_clear_counters(&td);
	for (int i = 0; i < 3; i++)
		fire_once(0, VEC_MSI);
	KIT_ASSERT(count[VEC_MSI] == 3 && td_reg(&td, TD_SENT_MSI) == 3);
	printf("pci_msi: MSI vector %#x: 3 messages, 3 interrupts\n", VEC_MSI);

	/* 3. per-vector mask: 4 messages leave one pending bit; unmasking sends it once */
	td_cfg_write32(&td, msi + MSI_MASK_64, 1);
	td_write(&td, TD_COUNT, 4);
	td_write(&td, TD_FIRE, 0);
	td_write(&td, TD_COUNT, 1);
	expect_nothing(VEC_MSI, 3);
	KIT_ASSERT(td_cfg_read32(&td, msi + MSI_PENDING_64) == 1);
	KIT_ASSERT(td_reg(&td, TD_PENDED_MSI) == 4 && td_reg(&td, TD_SENT_MSI) == 3);
	td_cfg_write32(&td, msi + MSI_MASK_64, 0);
	if (!KIT_WAIT_FOR(count[VEC_MSI] == 4, 100))
		kit_fail("pending MSI not sent on unmask");
	expect_nothing(VEC_MSI, 4);
	KIT_ASSERT(td_cfg_read32(&td, msi + MSI_PENDING_64) == 0);
	printf("pci_msi: masked vector: no interrupt, pending bit set; unmask delivered it once\n");

	/* 4. multiple message enable: 4 vectors, data 0x60 | k */
	td_cfg_write16(&td, msi + MSI_FLAGS, caps);
	td_cfg_write16(&td, msi + MSI_DATA_64, VEC_MULTI);
	td_cfg_write16(&td, msi + MSI_FLAGS, caps | 2 << 4 | MSI_FLAGS_ENABLE);
	for (int k = 0; k < 4; k++)
		fire_once(k, VEC_MULTI + k);
	/* 2 vectors enabled: vector 3 has no message (dropped), vector 1 still works */
	td_cfg_write16(&td, msi + MSI_FLAGS, caps | 1 << 4 | MSI_FLAGS_ENABLE);
	td_write(&td, TD_FIRE, 3);
	expect_nothing(VEC_MULTI + 3, 1);
	KIT_ASSERT(td_reg(&td, TD_DROPPED) == 1);
	fire_once(1, VEC_MULTI + 1);
	printf("pci_msi: multiple message: vectors %#x-%#x, one each; beyond the count dropped\n",
	       VEC_MULTI, VEC_MULTI + 3);
}

/* ---- 5: INTx vs MSI and INTx-disable ---- */
static void test_intx(int msi)
{
	int line = td_cfg_read8(&td, PCI_INTERRUPT_LINE);
	uint16_t cmd = td_cfg_read16(&td, PCI_COMMAND);

	KIT_ASSERT(td_cfg_read16(&td, msi + MSI_FLAGS) & MSI_FLAGS_ENABLE);
	kit_set_handler(VEC_INTX, intx_handler);
	ioapic_write(0x10 + 2 * line + 1, lapic_id() << 24);
	ioapic_write(0x10 + 2 * line, VEC_INTX | 1u << 15 | 1u << 13);	/* level, active low */

	td_cfg_write16(&td, PCI_COMMAND, cmd | PCI_COMMAND_INTX_DISABLE);
	td_write(&td, TD_INTX, 1);				/* the device wants INTx ... */
	settle();
	KIT_ASSERT(!(td_cfg_read16(&td, PCI_STATUS) & PCI_STATUS_INTERRUPT));	/* ... but MSI is on */
	td_cfg_write16(&td, msi + MSI_FLAGS, td_cfg_read16(&td, msi + MSI_FLAGS) & ~MSI_FLAGS_ENABLE);
	settle();
	KIT_ASSERT(td_cfg_read16(&td, PCI_STATUS) & PCI_STATUS_INTERRUPT);		/* asserting now, */
	KIT_ASSERT(intx_count == 0);					/* held by INTx-disable */
	td_cfg_write16(&td, PCI_COMMAND, cmd);
	if (!KIT_WAIT_FOR(intx_count > 0, 100))
		kit_fail("INTx not delivered with MSI and INTx-disable off");
	settle();
	KIT_ASSERT(intx_count == 1);
	KIT_ASSERT(!(td_cfg_read16(&td, PCI_STATUS) & PCI_STATUS_INTERRUPT));
	printf("pci_msi: INTx suppressed while MSI is enabled, held by INTx-disable, then delivered once "
	       "(GSI %d, spurious %d)\n", line, intx_spurious);
}

/* ---- 6-7: MSI-X ---- */
static void program_entry(int e, uint32_t apic, uint32_t vector)
{
	td_entry_program(&td, e, KIT_MSI_ADDR(apic), vector);	/* masked; one 64-bit address write */
	td_entry_mask(&td, e, false);
}

static void test_msix(int msix, uint32_t apic)
{
	uint16_t ctrl = td_cfg_read16(&td, msix + MSIX_FLAGS);
	uint32_t tbl = td_cfg_read32(&td, msix + MSIX_TABLE), pb = td_cfg_read32(&td, msix + MSIX_PBA);

	KIT_ASSERT(ctrl == 7);						/* 8 entries, off */
	KIT_ASSERT(tbl == 4 && pb == (0x800 | 4));			/* BAR4 +0, BAR4 +0x800 */
	td_cfg_write16(&td, msix + MSIX_FLAGS, 0xffff);
	KIT_ASSERT(td_cfg_read16(&td, msix + MSIX_FLAGS) == (MSIX_FLAGS_ENABLE | MSIX_FLAGS_MASKALL | 7));
	td_cfg_write16(&td, msix + MSIX_FLAGS, 0);
	td_cfg_write32(&td, msix + MSIX_TABLE, 0);
	KIT_ASSERT(td_cfg_read32(&td, msix + MSIX_TABLE) == tbl);

	for (int e = 0; e < 8; e++)					/* reset state: masked */
		KIT_ASSERT(*td_entry64(&td, e, 0) == 0 && *td_entry32(&td, e, MSIX_ENTRY_DATA) == 0 &&
			   *td_entry32(&td, e, MSIX_ENTRY_CTRL) == 1);
	*td_entry32(&td, 0, 0) = ~0u;					/* reserved bits read 0 */
	*td_entry32(&td, 0, MSIX_ENTRY_CTRL) = ~0u;
	KIT_ASSERT(*td_entry32(&td, 0, 0) == 0xfffffffc && *td_entry32(&td, 0, MSIX_ENTRY_CTRL) == 1);
	*(volatile uint32_t *)td.pba = ~0u;				/* the PBA is read-only */
	KIT_ASSERT(td_pba(&td) == 0);
	for (int e = 0; e < 8; e++)
		program_entry(e, apic, VEC_MSIX + e);
	KIT_ASSERT(*td_entry64(&td, 5, 0) == KIT_MSI_ADDR(apic));
	KIT_ASSERT(*td_entry64(&td, 5, MSIX_ENTRY_DATA) == VEC_MSIX + 5);	/* data | ctrl << 32 */
	printf("pci_msi: MSI-X capability at %#x: 8 entries, table BAR4+0, PBA BAR4+0x800\n", msix);

	/* INTx stays off while MSI-X is enabled (INTx-disable clear) */
	td_cfg_write16(&td, msix + MSIX_FLAGS, MSIX_FLAGS_ENABLE);
	td_write(&td, TD_INTX, 1);
	KIT_ASSERT(!(td_cfg_read16(&td, PCI_STATUS) & PCI_STATUS_INTERRUPT));
	settle();
	KIT_ASSERT(intx_count == 1);
	td_write(&td, TD_INTX, 0);

	td_clear_counters(&td);
	for (int e = 0; e < 8; e++)
		fire_once(TD_TARGET_MSIX | e, VEC_MSIX + e);
	KIT_ASSERT(td_reg(&td, TD_SENT_MSIX) == 8);
	printf("pci_msi: MSI-X entries 0-7: vectors %#x-%#x, one each\n", VEC_MSIX, VEC_MSIX + 7);

	/* function mask */
	td_cfg_write16(&td, msix + MSIX_FLAGS, MSIX_FLAGS_ENABLE | MSIX_FLAGS_MASKALL);
	td_write(&td, TD_FIRE, TD_TARGET_MSIX | 2);
	expect_nothing(VEC_MSIX + 2, 1);
	KIT_ASSERT(td_pba(&td) == 1u << 2 && td_reg(&td, TD_PENDED_MSIX) == 1);
	td_cfg_write16(&td, msix + MSIX_FLAGS, MSIX_FLAGS_ENABLE);
	if (!KIT_WAIT_FOR(count[VEC_MSIX + 2] == 2, 100))
		kit_fail("pending MSI-X not sent when the function mask cleared");
	expect_nothing(VEC_MSIX + 2, 2);
	KIT_ASSERT(td_pba(&td) == 0);

	/* entry mask */
	td_entry_mask(&td, 3, true);
	td_write(&td, TD_FIRE, TD_TARGET_MSIX | 3);
	expect_nothing(VEC_MSIX + 3, 1);
	KIT_ASSERT(*(volatile uint32_t *)td.pba == 1u << 3 && td_reg(&td, TD_PENDED_MSIX) == 2);
	td_entry_mask(&td, 3, false);
	if (!KIT_WAIT_FOR(count[VEC_MSIX + 3] == 2, 100))
		kit_fail("pending MSI-X not sent when the entry was unmasked");
	expect_nothing(VEC_MSIX + 3, 2);
	KIT_ASSERT(td_pba(&td) == 0);
	printf("pci_msi: function mask and entry mask: PBA bit set, sent once on unmask\n");

	/* re-programming an entry */
	program_entry(1, apic, VEC_MOVED);
	fire_once(TD_TARGET_MSIX | 1, VEC_MOVED);
	KIT_ASSERT(count[VEC_MSIX + 1] == 1);
	printf("pci_msi: entry 1 moved to vector %#x\n", VEC_MOVED);

	/*
	 * 7. the device thread: a burst of 5, 10 ms apart.  Edge messages to one
	 * vector coalesce in the LAPIC's IRR if the vCPU doesn't take each before
	 * the next arrives, so the period leaves the (emulated, shared-host) vCPU
	 * ample time; we spin rather than halt so that a lost one fails, not hangs.
	 */
	td_clear_counters(&td);
	td_write(&td, TD_COUNT, 5);
	td_write(&td, TD_PERIOD, 10000);
	td_write(&td, TD_TIMER, TD_TARGET_MSIX | 0);
	sti();
	if (!KIT_SPIN_UNTIL(count[VEC_MSIX] >= 6 && td_reg(&td, TD_TIMER) == 0, 20000000000ull))
		kit_fail("timer burst: %d interrupts, %u messages sent, %u to go", count[VEC_MSIX] - 1,
			 td_reg(&td, TD_SENT_MSIX), td_reg(&td, TD_TIMER));
	expect_nothing(VEC_MSIX, 6);
	KIT_ASSERT(td_reg(&td, TD_SENT_MSIX) == 5);
	printf("pci_msi: timer burst: 5 messages, 5 interrupts\n");

	/* a long burst, stopped by the guest */
	td_write(&td, TD_COUNT, 1000);
	td_write(&td, TD_PERIOD, 2000);
	td_write(&td, TD_TIMER, TD_TARGET_MSIX | 4);
	if (!KIT_WAIT_FOR(count[VEC_MSIX + 4] >= 3, 1000))
		kit_fail("long timer burst did not start");
	td_write(&td, TD_TIMER, TD_TIMER_STOP);
	KIT_ASSERT(td_reg(&td, TD_TIMER) == 0);
	settle();
	int got = count[VEC_MSIX + 4];
	uint32_t sent = td_reg(&td, TD_SENT_MSIX) - 5;
	for (int i = 0; i < 5; i++)
		expect_nothing(VEC_MSIX + 4, got);
	KIT_ASSERT(td_reg(&td, TD_SENT_MSIX) - 5 == sent);
	KIT_ASSERT(sent >= (uint32_t)got - 1);		/* 2 ms apart: some may have coalesced */
	printf("pci_msi: timer stopped after %u messages\n", sent);

	td_cfg_write16(&td, msix + MSIX_FLAGS, 0);
}

void kit_main(void)
{
	printf("pci_msi: MSI and MSI-X of the PCI test device\n");
	if (!td_find(&td))
		kit_fail("no PCI test device (run with --pci-testdev)");
	uint64_t bar4 = td_cfg_read32(&td, 0x20) & ~0xfu;
	KIT_ASSERT((td_cfg_read16(&td, PCI_COMMAND) & 3) == 3);
	printf("pci_msi: device at 00:%02x.0, BAR0 %#x, BAR4 %#lx\n", td.slot, td.io, bar4);

	outb(0x21, 0xff);
	outb(0xa1, 0xff);
	lapic_enable();
	for (int v = VEC_MSI; v <= VEC_MOVED; v++)
		if (v != VEC_INTX)
			kit_set_handler(v, msi_handler);
	uint32_t apic = lapic_id();

	test_msi(td.msi, apic);
	test_intx(td.msi);
	test_msix(td.msix, apic);
	kit_pass();
}
