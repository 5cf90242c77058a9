/*
 * pci_scan: enumerate bus 0 through configuration mechanism #1 (0xCF8/0xCFC)
 * and check what the VMM's PCI model promises:
 *  - type-1 detection as Linux does it, all-ones for empty slots, other
 *    buses and a disabled CONFIG_ADDRESS, byte/word accesses within the dword;
 *  - the host bridge at 00:00.0;
 *  - every BAR sized with decode off (save, write ~0, read back, restore);
 *  - the Xen platform device, if present (vmm run --xen-platform-device):
 *    IDs, class, BARs, interrupt line, the port 0x10 handshake and unplug;
 *  - the PCI test device, if present (vmm run --pci-testdev): BARs decode
 *    only while enabled, a moved BAR follows, a BAR moved onto another one
 *    is refused (left unmapped) without harm.
 */
#include "kit.h"

#define CF8		0xcf8
#define CFC		0xcfc
#define ENABLE		0x80000000u

#define XEN_VENDOR	0x5853
#define XEN_DEVICE	0x0001
#define TEST_VENDOR	0x1b36
#define TEST_DEVICE	0x0005
#define TEST_MAGIC	0x54494350u

enum { BAR_NONE, BAR_IO, BAR_MEM32, BAR_MEM64 };
static const char *const kind_name[] = { "none", "io", "mem32", "mem64" };

struct bar {
	int kind;
	bool pref;
	uint64_t addr, size;
};

static uint32_t addr_of(int slot, int fn, int off)
{
	return ENABLE | (uint32_t)slot << 11 | (uint32_t)fn << 8 | (off & 0xfc);
}

static uint32_t cfg_read32(int slot, int fn, int off)
{
	outl(CF8, addr_of(slot, fn, off));
	return inl(CFC);
}

static uint16_t cfg_read16(int slot, int fn, int off)
{
	outl(CF8, addr_of(slot, fn, off));
	return inw(CFC + (off & 2));
}

static uint8_t cfg_read8(int slot, int fn, int off)
{
	outl(CF8, addr_of(slot, fn, off));
	return inb(CFC + (off & 3));
}

static void cfg_write32(int slot, int fn, int off, uint32_t v)
{
	outl(CF8, addr_of(slot, fn, off));
	outl(CFC, v);
}

static void cfg_write16(int slot, int fn, int off, uint16_t v)
{
	outl(CF8, addr_of(slot, fn, off));
	outw(CFC + (off & 2), v);
}

static volatile uint32_t *mmio32(uint64_t addr)
{
	return (volatile uint32_t *)(uintptr_t)addr;
}

/* Size BAR i with decode off; returns how many BAR registers it uses. */
static int size_bar(int slot, int fn, int i, struct bar *b)
{
	int off = 0x10 + 4 * i;
	uint16_t cmd = cfg_read16(slot, fn, 0x04);

	cfg_write16(slot, fn, 0x04, cmd & ~3);
	uint32_t lo = cfg_read32(slot, fn, off);
	cfg_write32(slot, fn, off, ~0u);
	uint32_t mlo = cfg_read32(slot, fn, off);
	cfg_write32(slot, fn, off, lo);
	memset(b, 0, sizeof(*b));
	int used = 1;

	if (mlo == 0) {
		b->kind = BAR_NONE;
	} else if (lo & 1) {
		b->kind = BAR_IO;
		b->addr = lo & ~3u;
		b->size = (uint32_t)(~(mlo & ~3u) + 1);
	} else if ((lo & 6) == 4 && i < 5) {
		uint32_t hi = cfg_read32(slot, fn, off + 4);
		cfg_write32(slot, fn, off + 4, ~0u);
		uint32_t mhi = cfg_read32(slot, fn, off + 4);
		cfg_write32(slot, fn, off + 4, hi);
		uint64_t mask = (uint64_t)mhi << 32 | (mlo & ~0xfu);
		b->kind = BAR_MEM64;
		b->pref = lo & 8;
		b->addr = (uint64_t)hi << 32 | (lo & ~0xfu);
		b->size = ~mask + 1;
		used = 2;
	} else {
		b->kind = BAR_MEM32;
		b->pref = lo & 8;
		b->addr = lo & ~0xfu;
		b->size = (uint32_t)(~(mlo & ~0xfu) + 1);
	}
	cfg_write16(slot, fn, 0x04, cmd);
	/* The restore really restored. */
	KIT_ASSERT(cfg_read32(slot, fn, off) == lo);
	return used;
}

static void check_config_mechanism(void)
{
	/* Linux's pci_check_type1(): a byte write to 0xCFB must not latch. */
	outl(CF8, ENABLE);
	outb(CF8 + 3, 0x01);
	KIT_ASSERT(inl(CF8) == ENABLE);
	/* all-ones: disabled address, another bus, an empty slot */
	outl(CF8, 0);
	KIT_ASSERT(inl(CFC) == 0xffffffff);
	outl(CF8, ENABLE | 1u << 16);
	KIT_ASSERT(inl(CFC) == 0xffffffff);
	KIT_ASSERT(cfg_read32(31, 0, 0) == 0xffffffff);
	KIT_ASSERT(cfg_read16(31, 0, 2) == 0xffff);
	/* sub-dword reads land on the right bytes */
	uint32_t id = cfg_read32(0, 0, 0);
	KIT_ASSERT(cfg_read16(0, 0, 0) == (id & 0xffff));
	KIT_ASSERT(cfg_read16(0, 0, 2) == id >> 16);
	KIT_ASSERT(cfg_read8(0, 0, 1) == ((id >> 8) & 0xff));
	KIT_ASSERT(cfg_read8(0, 0, 3) == id >> 24);
	/* a byte write into the interrupt-line register leaves its neighbours */
	uint32_t d = cfg_read32(0, 0, 0x3c);
	outl(CF8, addr_of(0, 0, 0x3c));
	outb(CFC, 0x5a);
	KIT_ASSERT(cfg_read32(0, 0, 0x3c) == ((d & ~0xffu) | 0x5a));
	cfg_write32(0, 0, 0x3c, d);
	/* read-only IDs ignore writes */
	cfg_write32(0, 0, 0, 0);
	KIT_ASSERT(cfg_read32(0, 0, 0) == id);
}

static void check_xen_platform(int slot, const struct bar *bars)
{
	printf("pci_scan: Xen platform device at 00:%02x.0\n", slot);
	KIT_ASSERT(cfg_read32(slot, 0, 0x08) == 0xff800001);		/* class ff8000, rev 1 */
	KIT_ASSERT(cfg_read32(slot, 0, 0x2c) == 0x00015853);		/* subsystem 5853:0001 */
	KIT_ASSERT(cfg_read8(slot, 0, 0x3d) == 1);			/* INTA */
	KIT_ASSERT(cfg_read8(slot, 0, 0x3c) == 16 + slot % 4);		/* swizzled GSI */
	KIT_ASSERT(bars[0].kind == BAR_IO && bars[0].size == 0x100);
	KIT_ASSERT(bars[1].kind == BAR_MEM32 && bars[1].pref && bars[1].size == 16u << 20);
	KIT_ASSERT(inb(bars[0].addr) == 0);				/* platform flags */
	KIT_ASSERT(inb(bars[0].addr + 1) == 0xff);
	KIT_ASSERT(*mmio32(bars[1].addr) == 0);				/* nothing there yet */

	/* docs/misc/hvm-emulated-unplug.pandoc */
	KIT_ASSERT(inw(0x10) == 0x49d2);
	uint8_t version = inb(0x12);
	KIT_ASSERT(version == 1);
	outw(0x12, 0x0003);			/* product: linux */
	outl(0x10, 0x0001);			/* build number */
	KIT_ASSERT(inw(0x10) == 0x49d2);	/* not blacklisted */
	const char *msg = "pci_scan says hello\n";
	for (const char *p = msg; *p; p++)
		outb(0x12, *p);
	outw(0x10, 0x0003);			/* unplug IDE disks and NICs */
	printf("pci_scan: xen platform: magic 0x49d2, protocol %u, unplugged 0x3\n", version);
}

static void check_testdev(int slot, const struct bar *bars)
{
	printf("pci_scan: PCI test device at 00:%02x.0\n", slot);
	KIT_ASSERT(bars[0].kind == BAR_IO && bars[0].size == 0x40);
	KIT_ASSERT(bars[1].kind == BAR_MEM32 && !bars[1].pref && bars[1].size == 0x1000);
	KIT_ASSERT(bars[2].kind == BAR_MEM64 && bars[2].pref && bars[2].size == 0x1000);
	KIT_ASSERT(cfg_read8(slot, 0, 0x3c) == 16 + slot % 4);

	uint16_t io = bars[0].addr;
	uint64_t m1 = bars[1].addr, m2 = bars[2].addr;
	KIT_ASSERT(inl(io + 8) == TEST_MAGIC);
	KIT_ASSERT(*mmio32(m1) == TEST_MAGIC && mmio32(m1)[1] == 1);
	KIT_ASSERT(*mmio32(m2) == TEST_MAGIC && mmio32(m2)[1] == 2);

	/* decode enables */
	uint16_t cmd = cfg_read16(slot, 0, 0x04);
	KIT_ASSERT((cmd & 3) == 3);
	cfg_write16(slot, 0, 0x04, cmd & ~1);
	KIT_ASSERT(inl(io + 8) == 0xffffffff);
	KIT_ASSERT(*mmio32(m1) == TEST_MAGIC);
	cfg_write16(slot, 0, 0x04, cmd & ~2);
	KIT_ASSERT(inl(io + 8) == TEST_MAGIC);
	KIT_ASSERT(*mmio32(m1) == 0xffffffff && *mmio32(m2) == 0xffffffff);
	cfg_write16(slot, 0, 0x04, cmd);
	KIT_ASSERT(*mmio32(m1) == TEST_MAGIC && *mmio32(m2) == TEST_MAGIC);

	/* move BAR1 by 1 MiB: the device follows */
	uint32_t moved = (uint32_t)m1 + 0x100000;
	cfg_write32(slot, 0, 0x14, moved);
	KIT_ASSERT(*mmio32(m1) == 0xffffffff);
	KIT_ASSERT(*mmio32(moved) == TEST_MAGIC && mmio32(moved)[1] == 1);
	/* move it onto BAR2: refused, BAR2 still answers there */
	cfg_write32(slot, 0, 0x14, (uint32_t)m2);
	KIT_ASSERT(mmio32(m2)[1] == 2);
	KIT_ASSERT(*mmio32(moved) == 0xffffffff);
	cfg_write32(slot, 0, 0x14, (uint32_t)m1);
	KIT_ASSERT(mmio32(m1)[1] == 1);
	/* I/O BAR sizing with decode left on must not disturb anything */
	uint32_t b0 = cfg_read32(slot, 0, 0x10);
	cfg_write32(slot, 0, 0x10, ~0u);
	KIT_ASSERT(cfg_read32(slot, 0, 0x10) == 0xffffffc1);
	cfg_write32(slot, 0, 0x10, b0);
	KIT_ASSERT(inl(io + 8) == TEST_MAGIC);
	printf("pci_scan: test device: decode enables, BAR move and overlap refusal ok\n");
}

void kit_main(void)
{
	printf("pci_scan: enumerating bus 0\n");
	check_config_mechanism();

	int found = 0, xen_slot = -1, test_slot = -1;
	struct bar xen_bars[6], test_bars[6];

	for (int slot = 0; slot < 32; slot++) {
		int nfn = 1;
		for (int fn = 0; fn < nfn; fn++) {
			uint32_t id = cfg_read32(slot, fn, 0);
			if ((id & 0xffff) == 0xffff)
				continue;
			if (fn == 0 && (cfg_read8(slot, 0, 0x0e) & 0x80))
				nfn = 8;
			uint32_t class = cfg_read32(slot, fn, 0x08) >> 8;
			printf("00:%02x.%x %04x:%04x class %06x\n", slot, fn, id & 0xffff, id >> 16, class);
			found++;
			struct bar bars[6];
			memset(bars, 0, sizeof(bars));
			for (int i = 0; i < 6; i += size_bar(slot, fn, i, &bars[i])) {
			}
			for (int i = 0; i < 6; i++)
				if (bars[i].kind != BAR_NONE)
					printf("  BAR%d %s%s addr=%#lx size=%#lx\n", i, kind_name[bars[i].kind],
					       bars[i].pref ? " pref" : "", bars[i].addr, bars[i].size);
			if (slot == 0 && fn == 0) {
				KIT_ASSERT((id & 0xffff) == 0x8086);
				KIT_ASSERT(class >> 8 == 0x0600);
			}
			if (id == (XEN_DEVICE << 16 | XEN_VENDOR) && fn == 0) {
				xen_slot = slot;
				memcpy(xen_bars, bars, sizeof(bars));
			}
			if (id == (TEST_DEVICE << 16 | TEST_VENDOR) && fn == 0) {
				test_slot = slot;
				memcpy(test_bars, bars, sizeof(bars));
			}
		}
	}
	printf("pci_scan: %d functions\n", found);
	KIT_ASSERT(found >= 1);
	if (xen_slot >= 0)
		check_xen_platform(xen_slot, xen_bars);
	if (test_slot >= 0)
		check_testdev(test_slot, test_bars);
	kit_pass();
}
