/*
 * The PCI test device (devices/pci_testdev.py, `vmm run --pci-testdev`) for kit guests:
 * finding it, its config space, its BAR0 registers and its MSI-X table/PBA in BAR4.
 * Register offsets and bits: PCI Local Bus spec 3.0 §6.8, Linux
 * include/uapi/linux/pci_regs.h; the BAR0 layout is the device's own (its docstring).
 * Header-only (static inline): include it after kit.h.
 */
#ifndef KIT_PCI_TESTDEV_H
#define KIT_PCI_TESTDEV_H

#include "kit.h"

#define TESTDEV_VENDOR		0x1b36
#define TESTDEV_DEVICE		0x0005
#define TESTDEV_MAGIC		0x54494350u

/* BAR0 registers */
#define TD_INTX		0x00
#define TD_MAGIC	0x08
#define TD_COUNT	0x10
#define TD_FIRE		0x14
#define TD_PERIOD	0x18
#define TD_TIMER	0x1c
#define TD_SENT_MSI	0x20
#define TD_SENT_MSIX	0x24
#define TD_PENDED_MSI	0x28
#define TD_PENDED_MSIX	0x2c
#define TD_DROPPED	0x30
#define TD_TARGET_MSIX	(1u << 8)
#define TD_TIMER_STOP	(1u << 31)

/* config space */
#define PCI_COMMAND		0x04
#define  PCI_COMMAND_INTX_DISABLE (1u << 10)
#define PCI_STATUS		0x06
#define  PCI_STATUS_INTERRUPT	(1u << 3)
#define  PCI_STATUS_CAP_LIST	(1u << 4)
#define PCI_INTERRUPT_LINE	0x3c
#define PCI_CAP_ID_MSI		0x05
#define PCI_CAP_ID_MSIX		0x11
#define MSI_FLAGS		0x02
#define  MSI_FLAGS_ENABLE	0x0001
#define  MSI_FLAGS_QMASK	0x000e	/* multiple message capable */
#define  MSI_FLAGS_QSIZE	0x0070	/* multiple message enable */
#define  MSI_FLAGS_64BIT	0x0080
#define  MSI_FLAGS_MASKBIT	0x0100
#define MSI_ADDRESS_LO		0x04
#define MSI_ADDRESS_HI		0x08
#define MSI_DATA_64		0x0c
#define MSI_MASK_64		0x10
#define MSI_PENDING_64		0x14
#define MSIX_FLAGS		0x02
#define  MSIX_FLAGS_QSIZE	0x07ff	/* table size - 1 */
#define  MSIX_FLAGS_MASKALL	0x4000
#define  MSIX_FLAGS_ENABLE	0x8000
#define MSIX_TABLE		0x04
#define MSIX_PBA		0x08
#define MSIX_ENTRY_SIZE		16
#define MSIX_ENTRY_DATA		0x8
#define MSIX_ENTRY_CTRL		0xc
#define  MSIX_ENTRY_MASKBIT	1u

struct testdev {
	int slot;		/* bus 0, function 0 */
	uint16_t io;		/* BAR0 */
	uint64_t table, pba;	/* MSI-X table and PBA (BAR4) */
	int msi, msix;		/* capability offsets */
};

static inline uint32_t td_cfg_addr(const struct testdev *d, int off)
	{ return 0x80000000u | (uint32_t)d->slot << 11 | (off & 0xfc); }
static inline uint32_t td_cfg_read32(const struct testdev *d, int off)
	{ outl(0xcf8, td_cfg_addr(d, off)); return inl(0xcfc); }
static inline uint16_t td_cfg_read16(const struct testdev *d, int off)
	{ outl(0xcf8, td_cfg_addr(d, off)); return inw(0xcfc + (off & 2)); }
static inline uint8_t td_cfg_read8(const struct testdev *d, int off)
	{ outl(0xcf8, td_cfg_addr(d, off)); return inb(0xcfc + (off & 3)); }
static inline void td_cfg_write32(const struct testdev *d, int off, uint32_t v)
	{ outl(0xcf8, td_cfg_addr(d, off)); outl(0xcfc, v); }
static inline void td_cfg_write16(const struct testdev *d, int off, uint16_t v)
	{ outl(0xcf8, td_cfg_addr(d, off)); outw(0xcfc + (off & 2), v); }

static inline int td_find_cap(const struct testdev *d, int id)
{
	if (!(td_cfg_read16(d, PCI_STATUS) & PCI_STATUS_CAP_LIST))
		return 0;
	for (int p = td_cfg_read8(d, 0x34) & 0xfc, n = 0; p && n < 48; p = td_cfg_read8(d, p + 1) & 0xfc, n++)
		if (td_cfg_read8(d, p) == id)
			return p;
	return 0;
}

/* Find the device on bus 0 and fill D; false if absent or not as documented. */
static inline bool td_find(struct testdev *d)
{
	for (d->slot = 0; d->slot < 32; d->slot++)
		if (td_cfg_read32(d, 0) == (TESTDEV_DEVICE << 16 | TESTDEV_VENDOR))
			break;
	if (d->slot == 32)
		return false;
	d->io = td_cfg_read32(d, 0x10) & ~3u;
	uint64_t bar4 = td_cfg_read32(d, 0x20) & ~0xfu;
	d->msi = td_find_cap(d, PCI_CAP_ID_MSI);
	d->msix = td_find_cap(d, PCI_CAP_ID_MSIX);
	if (!d->io || !bar4 || !d->msi || !d->msix || inl(d->io + TD_MAGIC) != TESTDEV_MAGIC)
		return false;
	d->table = bar4 + (td_cfg_read32(d, d->msix + MSIX_TABLE) & ~7u);
	d->pba = bar4 + (td_cfg_read32(d, d->msix + MSIX_PBA) & ~7u);
	return true;
}

static inline uint32_t td_reg(const struct testdev *d, int reg) { return inl(d->io + reg); }
static inline void td_write(const struct testdev *d, int reg, uint32_t v) { outl(d->io + reg, v); }
static inline void td_clear_counters(const struct testdev *d)
{
	for (int r = TD_SENT_MSI; r <= TD_DROPPED; r += 4)
		outl(d->io + r, 0);
}

/* MSI-X table entries */
static inline volatile uint32_t *td_entry32(const struct testdev *d, int e, int off)
	{ return (volatile uint32_t *)(d->table + (uint64_t)e * MSIX_ENTRY_SIZE + off); }
static inline volatile uint64_t *td_entry64(const struct testdev *d, int e, int off)
	{ return (volatile uint64_t *)(d->table + (uint64_t)e * MSIX_ENTRY_SIZE + off); }
static inline void td_entry_mask(const struct testdev *d, int e, bool masked)
	{ *td_entry32(d, e, MSIX_ENTRY_CTRL) = masked ? MSIX_ENTRY_MASKBIT : 0; }
static inline bool td_entry_masked(const struct testdev *d, int e)
	{ return *td_entry32(d, e, MSIX_ENTRY_CTRL) & MSIX_ENTRY_MASKBIT; }
/* Mask entry E (as Linux does before reprogramming), write the message, leave it masked. */
static inline void td_entry_program(const struct testdev *d, int e, uint64_t addr, uint32_t data)
{
	td_entry_mask(d, e, true);
	*td_entry64(d, e, 0) = addr;
	*td_entry32(d, e, MSIX_ENTRY_DATA) = data;
}
static inline uint64_t td_pba(const struct testdev *d) { return *(volatile uint64_t *)d->pba; }
static inline void td_msix_ctrl(const struct testdev *d, uint16_t flags)
	{ td_cfg_write16(d, d->msix + MSIX_FLAGS, flags); }

#endif
