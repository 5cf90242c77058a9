/*
 * xen_memory: __HYPERVISOR_memory_op as Xen answers an HVM guest
 * (xen/common/memory.c do_memory_op, xen/arch/x86/mm/p2m.c
 * xenmem_add_to_physmap_one, xen/common/grant_table.c gnttab_map_frame,
 * xen/arch/x86/mm.c arch_memory_op, xen/arch/x86/hvm/hypercall.c
 * hvm_memory_op).
 */
#include "xen.h"

#define FILL 0x5a5a5a5a5a5a5a5aULL

static long atp(domid_t dom, unsigned space, uint64_t idx, void *page)
{
	struct xen_add_to_physmap x = {
		.domid = dom, .space = space, .idx = idx, .gpfn = (uintptr_t)page >> 12,
	};
	return HYPERVISOR_memory_op(XENMEM_add_to_physmap, &x);
}

static void fill(void *page)
{
	uint64_t *q = page;
	for (int i = 0; i < 512; i++)
		q[i] = FILL;
}

static long reservation(unsigned op, uint64_t *gpfns, uint64_t nr, domid_t dom)
{
	struct xen_memory_reservation r = {
		.extent_start = (uintptr_t)gpfns, .nr_extents = nr, .extent_order = 0, .domid = dom,
	};
	return HYPERVISOR_memory_op(op, &r);
}

static struct xen_e820_entry e820[32];

void kit_main(void)
{
	printf("xen_memory: memory_op: add_to_physmap(_batch), reservations, memory_map\n");
	xen_test_start("xen_memory");
	volatile struct shared_info *s = xen_shared_info;

	/* shared_info is live as soon as it is mapped (XENFEAT_hvm_safe_pvclock). */
	volatile struct vcpu_time_info *t = &s->vcpu_info[0].time;
	XEN_CHECK(t->tsc_to_system_mul != 0 && !(t->version & 1),
		  "vcpu_info[0].time not valid after add_to_physmap: version %u mul %u\n",
		  t->version, t->tsc_to_system_mul);
	XEN_CHECK(!(s->wc_version & 1), "wc_version %u odd\n", s->wc_version);
	printf("xen_memory: add_to_physmap(shared_info) at gpfn %#lx: pvclock and wallclock live ok\n",
	       (unsigned long)((uintptr_t)s >> 12));

	/* add_to_physmap errors */
	XEN_EXPECT("add_to_physmap(shared_info, idx 1)",
		   atp(DOMID_SELF, XENMAPSPACE_shared_info, 1, xen_scratch_page(3)), -XEN_EINVAL);
	XEN_EXPECT("add_to_physmap(space 99)", atp(DOMID_SELF, 99, 0, xen_scratch_page(3)), -XEN_EINVAL);
	XEN_EXPECT("add_to_physmap(gmfn_foreign)",
		   atp(DOMID_SELF, XENMAPSPACE_gmfn_foreign, 0, xen_scratch_page(3)), -XEN_ENOSYS);
	XEN_EXPECT("add_to_physmap(domid 0x1234)",
		   atp(0x1234, XENMAPSPACE_shared_info, 0, xen_scratch_page(3)), -XEN_ESRCH);

	/* Grant-table frame 0: the gpfn now shows the (zeroed) grant frame, not the old RAM. */
	uint64_t *g0 = xen_scratch_page(0);
	fill(g0);
	XEN_EXPECT("add_to_physmap(grant_table, 0)", atp(DOMID_SELF, XENMAPSPACE_grant_table, 0, g0), 0);
	XEN_CHECK(((volatile uint64_t *)g0)[0] != FILL && ((volatile uint64_t *)g0)[511] != FILL,
		  "gpfn still shows the old RAM page\n");
	printf("xen_memory: grant frame 0 replaced the RAM page at gpfn %#lx ok\n",
	       (unsigned long)((uintptr_t)g0 >> 12));
	XEN_EXPECT("add_to_physmap(grant_table, 0x10000)",
		   atp(DOMID_SELF, XENMAPSPACE_grant_table, 0x10000, xen_scratch_page(3)), -XEN_EINVAL);

	/* add_to_physmap_batch: per-entry errors in errs[], overall 0. */
	uint64_t *g1 = xen_scratch_page(1), *g2 = xen_scratch_page(2);
	fill(g1);
	fill(g2);
	static uint64_t idxs[2], gpfns[2];
	static int32_t errs[2];
	struct xen_add_to_physmap_batch b = {
		.domid = DOMID_SELF, .space = XENMAPSPACE_grant_table, .size = 2,
		.idxs = (uintptr_t)idxs, .gpfns = (uintptr_t)gpfns, .errs = (uintptr_t)errs,
	};
	idxs[0] = 1, gpfns[0] = (uintptr_t)g1 >> 12;
	idxs[1] = 2, gpfns[1] = (uintptr_t)g2 >> 12;
	errs[0] = errs[1] = 12345;
	XEN_EXPECT("add_to_physmap_batch(grant_table, [1, 2])",
		   HYPERVISOR_memory_op(XENMEM_add_to_physmap_batch, &b), 0);
	XEN_CHECK(errs[0] == 0 && errs[1] == 0, "errs %d %d\n", errs[0], errs[1]);
	XEN_CHECK(((volatile uint64_t *)g1)[0] != FILL && ((volatile uint64_t *)g2)[0] != FILL,
		  "batch-mapped gpfns still show RAM\n");
	printf("xen_memory: batch mapped grant frames 1 and 2, errs [0, 0] ok\n");

	/* A frame placed in the PCI MMIO hole, where Linux puts its grant frames (the Xen
	 * platform device's BAR): Xen's p2m backs that gpfn, so must the VMM.  A move keeps
	 * the contents, and the old place is unassigned MMIO again (reads all-ones). */
	volatile uint64_t *ha = (volatile uint64_t *)0xF0000000UL, *hb = (volatile uint64_t *)0xF0001000UL;
	XEN_EXPECT("add_to_physmap(grant_table, 3) at 0xf0000000 (PCI hole)",
		   atp(DOMID_SELF, XENMAPSPACE_grant_table, 3, (void *)ha), 0);
	XEN_CHECK(ha[0] == 0 && ha[511] == 0, "a new grant frame in the hole reads %#lx\n", ha[0]);
	ha[5] = 0x1234567890abcdefULL;
	XEN_CHECK(ha[5] == 0x1234567890abcdefULL, "the grant frame in the hole is not writable\n");
	XEN_EXPECT("add_to_physmap(grant_table, 3) moved to 0xf0001000",
		   atp(DOMID_SELF, XENMAPSPACE_grant_table, 3, (void *)hb), 0);
	XEN_CHECK(hb[5] == 0x1234567890abcdefULL, "the moved frame reads %#lx\n", hb[5]);
	XEN_CHECK(ha[0] == ~0ULL, "its old place reads %#lx, not unassigned MMIO\n", ha[0]);
	printf("xen_memory: grant frame 3 placed in the PCI MMIO hole, moved with its contents ok\n");
	XEN_EXPECT("add_to_physmap(grant_table, 4) onto frame 3's page (refused)",
		   atp(DOMID_SELF, XENMAPSPACE_grant_table, 4, (void *)hb), -XEN_EINVAL);
	XEN_CHECK(hb[5] == 0x1234567890abcdefULL, "frame 3 was overwritten: %#lx\n", hb[5]);
	XEN_EXPECT("add_to_physmap(grant_table, 4) at the LAPIC page",
		   atp(DOMID_SELF, XENMAPSPACE_grant_table, 4, (void *)0xFEE00000UL), -XEN_EINVAL);

	b.space = XENMAPSPACE_shared_info;
	idxs[0] = 0, gpfns[0] = (uintptr_t)s >> 12;		/* the same place again */
	idxs[1] = 7, gpfns[1] = (uintptr_t)xen_scratch_page(3) >> 12;
	errs[0] = errs[1] = 12345;
	XEN_EXPECT("add_to_physmap_batch(shared_info, [0, 7])",
		   HYPERVISOR_memory_op(XENMEM_add_to_physmap_batch, &b), 0);
	XEN_CHECK(errs[0] == 0 && errs[1] == -XEN_EINVAL, "errs %d %d, want 0 %d\n",
		  errs[0], errs[1], -XEN_EINVAL);
	printf("xen_memory: batch errs [0, -EINVAL] for shared_info idx [0, 7] ok\n");
	/* Element by element (xenmem_add_to_physmap_batch): gpfns[1] on an unmapped page ends
	 * the call with -EFAULT after element 0 was done and errs[0] written. */
	uint64_t *edge = (uint64_t *)((char *)xen_map_4k(10, (uintptr_t)xen_scratch_page(4)) + 4096 - 8);
	xen_unmap_4k(11);
	*edge = (uintptr_t)s >> 12;
	idxs[0] = 0;
	b.gpfns = (uintptr_t)edge;
	errs[0] = errs[1] = 12345;
	XEN_EXPECT("add_to_physmap_batch(shared_info, gpfns[1] unmapped)",
		   HYPERVISOR_memory_op(XENMEM_add_to_physmap_batch, &b), -XEN_EFAULT);
	XEN_CHECK(errs[0] == 0 && errs[1] == 12345, "errs %d %d, want 0 12345\n", errs[0], errs[1]);
	b.gpfns = (uintptr_t)gpfns;
	xen_unmap_4k(10);
	XEN_CHECK(s->vcpu_info[0].time.tsc_to_system_mul != 0, "shared_info lost after remap\n");
	b.size = 0;
	XEN_EXPECT("add_to_physmap_batch(size 0)", HYPERVISOR_memory_op(XENMEM_add_to_physmap_batch, &b), 0);
	b.size = 2;
	b.space = XENMAPSPACE_gmfn_range;
	XEN_EXPECT("add_to_physmap_batch(gmfn_range)",
		   HYPERVISOR_memory_op(XENMEM_add_to_physmap_batch, &b), -XEN_EOPNOTSUPP);

	/* Sizes */
	long maxpage = HYPERVISOR_memory_op(XENMEM_maximum_ram_page, NULL);
	XEN_CHECK(maxpage > 0, "maximum_ram_page = %ld\n", maxpage);
	printf("xen_memory: maximum_ram_page = %#lx ok\n", maxpage);
	domid_t self = DOMID_SELF, bad = 0x1234;
	long cur = HYPERVISOR_memory_op(XENMEM_current_reservation, &self);
	long max = HYPERVISOR_memory_op(XENMEM_maximum_reservation, &self);
	XEN_CHECK(cur > 0 && max >= cur, "current %ld maximum %ld\n", cur, max);
	printf("xen_memory: current_reservation %ld pages, maximum_reservation %ld ok\n", cur, max);
	XEN_EXPECT("current_reservation(domid 0x1234)",
		   HYPERVISOR_memory_op(XENMEM_current_reservation, &bad), -XEN_ESRCH);

	/* memory_map: the domain's e820 (packed 20-byte entries); RAM as in the PVH memmap. */
	struct xen_memory_map mm = { .nr_entries = 32, .buffer = (uintptr_t)e820 };
	XEN_EXPECT("memory_map(32)", HYPERVISOR_memory_op(XENMEM_memory_map, &mm), 0);
	XEN_CHECK(mm.nr_entries >= 1 && mm.nr_entries <= 32, "nr_entries %u\n", mm.nr_entries);
	unsigned ram = 0;
	for (unsigned i = 0; i < mm.nr_entries; i++) {
		printf("xen_memory: e820[%u] %#llx+%#llx type %u\n", i, (unsigned long long)e820[i].addr,
		       (unsigned long long)e820[i].size, e820[i].type);
		ram += e820[i].type == 1;
	}
	const struct hvm_start_info *si = kit_start_info();
	if (si && si->version >= 1 && si->memmap_paddr) {
		const struct hvm_memmap_table_entry *me = (const void *)(uintptr_t)si->memmap_paddr;
		unsigned pvh_ram = 0;
		for (unsigned i = 0; i < si->memmap_entries; i++) {
			if (me[i].type != 1)
				continue;
			pvh_ram++;
			bool found = false;
			for (unsigned j = 0; j < mm.nr_entries; j++)
				found |= e820[j].type == 1 && e820[j].addr == me[i].addr && e820[j].size == me[i].size;
			XEN_CHECK(found, "PVH RAM %#llx+%#llx missing from XENMEM_memory_map\n",
				  (unsigned long long)me[i].addr, (unsigned long long)me[i].size);
		}
		XEN_CHECK(ram == pvh_ram, "%u RAM entries, PVH memmap has %u\n", ram, pvh_ram);
		printf("xen_memory: memory_map RAM entries match the PVH memmap (%u) ok\n", ram);
	}
	mm.nr_entries = 1;
	XEN_EXPECT("memory_map(1)", HYPERVISOR_memory_op(XENMEM_memory_map, &mm), 0);
	XEN_EXPECT("memory_map(1).nr_entries", mm.nr_entries, 1);

	/* Balloon a page out and back: the repopulated page is a fresh (zeroed) one. */
	uint64_t *pg = xen_scratch_page(4);
	fill(pg);
	static uint64_t gpfn;
	gpfn = (uintptr_t)pg >> 12;
	XEN_EXPECT("decrease_reservation(1 page)", reservation(XENMEM_decrease_reservation, &gpfn, 1, DOMID_SELF), 1);
	XEN_EXPECT("populate_physmap(1 page)", reservation(XENMEM_populate_physmap, &gpfn, 1, DOMID_SELF), 1);
	XEN_CHECK(((volatile uint64_t *)pg)[0] == 0 && ((volatile uint64_t *)pg)[511] == 0,
		  "repopulated page holds %#lx\n", pg[0]);
	pg[7] = 0x1234;
	XEN_CHECK(((volatile uint64_t *)pg)[7] == 0x1234, "repopulated page not writable\n");
	printf("xen_memory: ballooned page comes back zeroed and writable ok\n");
	/* Only RAM comes back, once (common/memory.c guest_remove_page fails otherwise and the
	 * call stops): a hole gfn, a page given back already and an extent above the domU
	 * max order (9) are 0 extents done, and current_reservation never counts them. */
	long cur0 = HYPERVISOR_memory_op(XENMEM_current_reservation, &self);
	static uint64_t hole = 0xFEE00;			/* the LAPIC page */
	XEN_EXPECT("decrease_reservation(LAPIC gfn)", reservation(XENMEM_decrease_reservation, &hole, 1, DOMID_SELF), 0);
	XEN_EXPECT("decrease_reservation(page)", reservation(XENMEM_decrease_reservation, &gpfn, 1, DOMID_SELF), 1);
	XEN_EXPECT("decrease_reservation(the same page again)",
		   reservation(XENMEM_decrease_reservation, &gpfn, 1, DOMID_SELF), 0);
	XEN_EXPECT("current_reservation after one page", HYPERVISOR_memory_op(XENMEM_current_reservation, &self),
		   cur0 - 1);
	XEN_EXPECT("populate_physmap(page)", reservation(XENMEM_populate_physmap, &gpfn, 1, DOMID_SELF), 1);
	static uint64_t big = 0x200;			/* 2 MiB..6 MiB: RAM, but order 10 */
	struct xen_memory_reservation r10 = { .extent_start = (uintptr_t)&big, .nr_extents = 1,
					      .extent_order = 10, .domid = DOMID_SELF };
	XEN_EXPECT("decrease_reservation(order 10)", HYPERVISOR_memory_op(XENMEM_decrease_reservation, &r10), 0);
	XEN_EXPECT("current_reservation restored", HYPERVISOR_memory_op(XENMEM_current_reservation, &self), cur0);
	long inc = reservation(XENMEM_increase_reservation, NULL, 1, DOMID_SELF);
	XEN_CHECK(inc == 0 || inc == 1, "increase_reservation(1) = %ld\n", inc);
	printf("xen_memory: increase_reservation(1, no list) = %ld (0 at max_pages) ok\n", inc);
	/* Failures return the extents done (0), not an errno. */
	XEN_EXPECT("decrease_reservation(nr_extents 2^40)",
		   reservation(XENMEM_decrease_reservation, &gpfn, 1ULL << 40, DOMID_SELF), 0);
	XEN_EXPECT("decrease_reservation(domid 0x1234)",
		   reservation(XENMEM_decrease_reservation, &gpfn, 1, 0x1234), 0);

	XEN_EXPECT("machphys_mapping (HVM)", HYPERVISOR_memory_op(XENMEM_machphys_mapping, xen_scratch_page(5)), -XEN_ENOSYS);
	XEN_EXPECT("memory_op 99 (unknown)", HYPERVISOR_memory_op(99, NULL), -XEN_ENOSYS);
	xen_pass();
}
