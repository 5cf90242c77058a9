/*
 * acpi_poweroff: finds the VMM's ACPI tables the way an OS does and powers
 * off through them (ACPI 6.x, a full, not hardware-reduced, ACPI platform).
 *
 *   RSDP (hvm_start_info.rsdp_paddr; §5.2.5.3: signature, both checksums,
 *   revision 2) -> XSDT (§5.2.8) -> every table's checksum -> FADT (§5.2.9:
 *   not HW_REDUCED_ACPI, RESET_REG_SUP, SCI_INT 9, SMI_CMD 0, the PM1a event
 *   and control blocks and the PM timer in System I/O space, X_FIRMWARE_CTRL
 *   -> a 64-byte aligned FACS (§5.2.10)) -> DSDT (X_DSDT: the \_S5_ package's
 *   first element is SLP_TYPa) -> MADT (§5.2.12: one enabled Processor Local
 *   APIC per vCPU, APIC id = index, an I/O APIC at 0xfec00000, and the SCI's
 *   interrupt source override ISA 9 -> GSI 9, level, active high).
 *
 * Command line: cpus=N (the number of LAPIC entries to expect, default 1);
 * noacpi: expect rsdp_paddr == 0 (vmm run --no-acpi) and pass.
 * After "PASS" it writes SLP_TYPa << 10 | SLP_EN to PM1a_CNT (§4.8.3.2.1),
 * so the exit status 0 comes from the VMM's ACPI poweroff, not from the
 * debug-exit port.  acpi_reset.c builds this with ACPI_DO_RESET=1: it writes
 * the FADT's RESET_VALUE to RESET_REG instead (exit 80).
 */
#include "kit.h"

#ifndef ACPI_DO_RESET
#define ACPI_DO_RESET 0
#endif

struct __attribute__((packed)) acpi_rsdp {		/* §5.2.5.3 */
	char signature[8];
	uint8_t checksum;
	char oem_id[6];
	uint8_t revision;
	uint32_t rsdt_address;
	uint32_t length;
	uint64_t xsdt_address;
	uint8_t extended_checksum;
	uint8_t reserved[3];
};

struct __attribute__((packed)) acpi_header {		/* §5.2.6 */
	char signature[4];
	uint32_t length;
	uint8_t revision;
	uint8_t checksum;
	char oem_id[6];
	char oem_table_id[8];
	uint32_t oem_revision;
	uint32_t creator_id;
	uint32_t creator_revision;
};

struct __attribute__((packed)) acpi_gas {		/* §5.2.3.2 */
	uint8_t space_id;		/* 1 = System I/O */
	uint8_t bit_width;
	uint8_t bit_offset;
	uint8_t access_size;
	uint64_t address;
};

struct __attribute__((packed)) acpi_fadt {		/* §5.2.9, the fields we use */
	struct acpi_header header;
	uint32_t firmware_ctrl;		/* 36 */
	uint32_t dsdt;			/* 40 */
	uint8_t reserved0, pm_profile;	/* 44 */
	uint16_t sci_int;		/* 46 */
	uint32_t smi_cmd;		/* 48 */
	uint8_t fields_52_to_55[4];
	uint32_t pm1a_evt_blk;		/* 56 */
	uint32_t pm1b_evt_blk;		/* 60 */
	uint32_t pm1a_cnt_blk;		/* 64 */
	uint32_t pm1b_cnt_blk;		/* 68 */
	uint32_t pm2_cnt_blk;		/* 72 */
	uint32_t pm_tmr_blk;		/* 76 */
	uint32_t gpe0_blk, gpe1_blk;	/* 80 */
	uint8_t pm1_evt_len, pm1_cnt_len, pm2_cnt_len, pm_tmr_len;	/* 88 */
	uint8_t fields_92_to_111[112 - 92];
	uint32_t flags;			/* offset 112 */
	struct acpi_gas reset_reg;	/* 116 */
	uint8_t reset_value;		/* 128 */
	uint8_t fields_129_to_131[132 - 129];
	uint64_t x_firmware_ctrl;	/* 132 */
	uint64_t x_dsdt;		/* 140 */
	struct acpi_gas x_blocks[8];	/* 148: X_PM1a_EVT_BLK .. X_GPE1_BLK */
	struct acpi_gas sleep_control;	/* 244 */
	struct acpi_gas sleep_status;	/* 256 */
	uint64_t hypervisor_vendor;	/* 268 */
};
_Static_assert(sizeof(struct acpi_fadt) == 276, "FADT revision 6 is 276 bytes");

#define FADT_RESET_REG_SUP	(1u << 10)
#define FADT_HW_REDUCED_ACPI	(1u << 20)
#define GAS_SYSTEM_IO		1
#define SLP_EN			(1u << 13)	/* §4.8.3.2.1 PM1 control register */
#define SLP_TYP_SHIFT		10
#define SCI_EN			(1u << 0)
#define MADT_LOCAL_APIC		0
#define MADT_IO_APIC		1
#define MADT_INT_OVERRIDE	2

static uint8_t sum(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint8_t s = 0;

	while (n--)
		s += *b++;
	return s;
}

/* The 4-character signature as a C string (kit printf has no %.4s). */
static const char *sig4(const struct acpi_header *h)
{
	static char buf[5];

	memcpy(buf, h->signature, 4);
	return buf;
}

static const struct acpi_header *table(uint64_t paddr, const char *sig)
{
	const struct acpi_header *h = (const void *)(uintptr_t)paddr;

	if (!paddr || paddr >= 0x100000000UL)
		kit_fail("%s: bad table address %#lx", sig, paddr);
	if (sig && memcmp(h->signature, sig, 4))
		kit_fail("table at %#lx: expected %s", paddr, sig);
	if (h->length < sizeof(*h) || h->length > 0x10000)
		kit_fail("%s: bad length %u", sig4(h), h->length);
	if (sum(h, h->length))
		kit_fail("%s: bad checksum", sig4(h));
	if (paddr & 15)
		kit_fail("%s at %#lx is not 16-byte aligned", sig4(h), paddr);
	printf("acpi: %s at %#lx len %u rev %u checksum ok\n", sig4(h), paddr, h->length, h->revision);
	return h;
}

/* "_S5_" PackageOp PkgLength NumElements <first element>: SLP_TYPa (§7.4.2). */
static int s5_slp_typ(const struct acpi_header *dsdt)
{
	const uint8_t *p = (const uint8_t *)dsdt + sizeof(*dsdt);
	const uint8_t *end = (const uint8_t *)dsdt + dsdt->length;

	for (; p + 8 <= end; p++) {
		if (memcmp(p, "_S5_", 4) || p[4] != 0x12)	/* PackageOp */
			continue;
		p += 5;
		p += 1 + (*p >> 6);				/* PkgLength: lead byte + 0..3 */
		p += 1;						/* NumElements */
		if (p >= end)
			break;
		switch (*p) {
		case 0x00: return 0;				/* ZeroOp */
		case 0x01: return 1;				/* OneOp */
		case 0x0a: return p + 1 < end ? p[1] : -1;	/* BytePrefix */
		default:   return -1;
		}
	}
	return -1;
}

static unsigned long cmdline_value(const char *key, unsigned long dflt)
{
	const char *c = kit_cmdline();
	size_t n = strlen(key);

	for (; *c; c++) {
		if ((c == kit_cmdline() || c[-1] == ' ') && !memcmp(c, key, n)) {
			unsigned long v = 0;

			for (c += n; *c >= '0' && *c <= '9'; c++)
				v = v * 10 + (unsigned long)(*c - '0');
			return v;
		}
	}
	return dflt;
}

void kit_main(void)
{
	const struct hvm_start_info *si = kit_start_info();
	unsigned long want_cpus = cmdline_value("cpus=", 1);
	bool no_acpi = cmdline_value("noacpi", 0xffff) != 0xffff;
	const struct acpi_rsdp *rsdp;
	const struct acpi_header *xsdt, *madt = NULL;
	const struct acpi_fadt *fadt = NULL;
	unsigned ncpus = 0, nioapics = 0, noverrides = 0;
	int slp_typ;

	printf("acpi_poweroff: ACPI tables, then %s through them\n", ACPI_DO_RESET ? "reset" : "poweroff");
	KIT_ASSERT(si);
	if (no_acpi) {
		KIT_ASSERT(si->rsdp_paddr == 0);
		printf("acpi: rsdp_paddr=0 (no ACPI)\n");
		kit_pass();
	}

	/* RSDP: ACPI 1.0 checksum over 20 bytes, extended checksum over all of it. */
	rsdp = (const void *)(uintptr_t)si->rsdp_paddr;
	KIT_ASSERT(si->rsdp_paddr && (si->rsdp_paddr & 15) == 0);
	KIT_ASSERT(!memcmp(rsdp->signature, "RSD PTR ", 8));
	KIT_ASSERT(sum(rsdp, 20) == 0);
	KIT_ASSERT(rsdp->revision >= 2 && rsdp->length == sizeof(*rsdp));
	KIT_ASSERT(sum(rsdp, rsdp->length) == 0);
	printf("acpi: RSDP at %#lx rev %u xsdt %#lx checksums ok\n",
	       si->rsdp_paddr, rsdp->revision, rsdp->xsdt_address);

	xsdt = table(rsdp->xsdt_address, "XSDT");
	for (uint32_t off = sizeof(*xsdt); off + 8 <= xsdt->length; off += 8) {
		uint64_t addr;
		const struct acpi_header *h;

		memcpy(&addr, (const uint8_t *)xsdt + off, 8);
		h = table(addr, NULL);
		if (!memcmp(h->signature, "FACP", 4))
			fadt = (const void *)h;
		else if (!memcmp(h->signature, "APIC", 4))
			madt = h;
	}
	KIT_ASSERT(fadt && madt);

	KIT_ASSERT(fadt->header.revision >= 6 && fadt->header.length >= sizeof(*fadt));
	KIT_ASSERT(!(fadt->flags & FADT_HW_REDUCED_ACPI));
	KIT_ASSERT(fadt->flags & FADT_RESET_REG_SUP);
	KIT_ASSERT(fadt->reset_reg.space_id == GAS_SYSTEM_IO && fadt->reset_reg.address);
	KIT_ASSERT(fadt->sci_int == 9 && fadt->smi_cmd == 0);
	KIT_ASSERT(fadt->pm1a_evt_blk && fadt->pm1_evt_len == 4);
	KIT_ASSERT(fadt->pm1a_cnt_blk && fadt->pm1_cnt_len == 2);
	KIT_ASSERT(fadt->pm_tmr_blk && fadt->pm_tmr_len == 4);
	KIT_ASSERT(inw((uint16_t)fadt->pm1a_cnt_blk) & SCI_EN);	/* no SMM: always in ACPI mode */
	printf("acpi: FADT SCI_INT %u PM1a_EVT %#x PM1a_CNT %#x PM_TMR %#x reset %#lx value %#x\n",
	       fadt->sci_int, fadt->pm1a_evt_blk, fadt->pm1a_cnt_blk, fadt->pm_tmr_blk,
	       fadt->reset_reg.address, fadt->reset_value);
	{
		const char *facs = (const char *)(uintptr_t)fadt->x_firmware_ctrl;
		uint32_t len;

		KIT_ASSERT(fadt->x_firmware_ctrl && !(fadt->x_firmware_ctrl & 63) && !fadt->firmware_ctrl);
		memcpy(&len, facs + 4, 4);
		KIT_ASSERT(!memcmp(facs, "FACS", 4) && len == 64);
		printf("acpi: FACS at %#lx len %u version %u\n", fadt->x_firmware_ctrl, len, (unsigned)facs[32]);
	}

	slp_typ = s5_slp_typ(table(fadt->x_dsdt, "DSDT"));
	if (slp_typ < 0 || slp_typ > 7)
		kit_fail("no usable \\_S5_ package in the DSDT");
	printf("acpi: DSDT \\_S5_ SLP_TYPa=%d\n", slp_typ);

	/* MADT: 8-byte header fields after the SDT header, then entries. */
	for (uint32_t off = sizeof(*madt) + 8; off + 2 <= madt->length;) {
		const uint8_t *e = (const uint8_t *)madt + off;

		if (e[1] < 2 || off + e[1] > madt->length)
			kit_fail("MADT: bad entry length %u at offset %u", e[1], off);
		if (e[0] == MADT_LOCAL_APIC) {
			uint32_t flags;

			memcpy(&flags, e + 4, 4);
			printf("acpi: MADT LAPIC uid %u apic_id %u flags %#x\n", e[2], e[3], flags);
			KIT_ASSERT(e[3] == ncpus && (flags & 1));
			ncpus++;
		} else if (e[0] == MADT_IO_APIC) {
			uint32_t addr, gsi_base;

			memcpy(&addr, e + 4, 4);
			memcpy(&gsi_base, e + 8, 4);
			printf("acpi: MADT IOAPIC id %u addr %#x gsi_base %u\n", e[2], addr, gsi_base);
			KIT_ASSERT(addr == 0xfec00000 && gsi_base == 0);
			nioapics++;
		} else if (e[0] == MADT_INT_OVERRIDE) {
			uint32_t gsi;
			uint16_t flags;

			memcpy(&gsi, e + 4, 4);
			memcpy(&flags, e + 8, 2);
			printf("acpi: MADT override bus %u irq %u gsi %u flags %#x\n", e[2], e[3], gsi, flags);
			KIT_ASSERT(e[2] == 0 && e[3] == 9 && gsi == 9 && flags == 0xd);	/* level, high */
			noverrides++;
		}
		off += e[1];
	}
	if (ncpus != want_cpus || nioapics != 1)
		kit_fail("MADT: %u CPUs and %u I/O APICs, expected %lu and 1", ncpus, nioapics, want_cpus);
	KIT_ASSERT(noverrides == 1);
	printf("acpi: MADT %u CPUs ok\n", ncpus);
	printf("PASS\n");

	if (ACPI_DO_RESET) {
		printf("acpi: writing %#x to RESET_REG %#lx\n", fadt->reset_value, fadt->reset_reg.address);
		outb((uint16_t)fadt->reset_reg.address, fadt->reset_value);
	} else {
		/* as Linux's acpi_hw_legacy_sleep: SLP_TYP first, then SLP_TYP | SLP_EN */
		printf("acpi: writing SLP_TYP=%d|SLP_EN to PM1a_CNT %#x\n", slp_typ, fadt->pm1a_cnt_blk);
		outw((uint16_t)fadt->pm1a_cnt_blk, (uint16_t)(slp_typ << SLP_TYP_SHIFT));
		outw((uint16_t)fadt->pm1a_cnt_blk, (uint16_t)(slp_typ << SLP_TYP_SHIFT | SLP_EN));
	}
	for (volatile int i = 0; i < 100000; i++)	/* give the VMM time */
		;
	kit_fail("still running after the ACPI %s request", ACPI_DO_RESET ? "reset" : "poweroff");
}
