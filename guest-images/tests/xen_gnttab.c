/*
 * xen_gnttab: __HYPERVISOR_grant_table_op for an HVM guest with grant table
 * v1 only (xen/common/grant_table.c do_grant_table_op, gnttab_query_size,
 * gnttab_setup_table, gnttab_set_version, gnttab_get_version;
 * xen/arch/x86/hvm/hypercall.c hvm_grant_table_op).  max_grant_version = 1:
 * set_version(2) -> -ENOSYS, as Xen does for such a domain.
 */
#include "xen.h"

static uint64_t frames[4];

void kit_main(void)
{
	printf("xen_gnttab: query_size, set/get_version (v1 only), setup_table\n");
	xen_test_start("xen_gnttab");

	struct gnttab_query_size qs = { .dom = DOMID_SELF, .status = 99 };
	XEN_EXPECT("query_size(self)", HYPERVISOR_grant_table_op(GNTTABOP_query_size, &qs, 1), 0);
	XEN_EXPECT("query_size.status", qs.status, GNTST_okay);
	XEN_CHECK(qs.nr_frames >= 1 && qs.max_nr_frames >= qs.nr_frames, "nr_frames %u max %u\n",
		  qs.nr_frames, qs.max_nr_frames);
	printf("xen_gnttab: %u frames of %u max ok\n", qs.nr_frames, qs.max_nr_frames);
	uint32_t max = qs.max_nr_frames;
	XEN_EXPECT("query_size(count 2)", HYPERVISOR_grant_table_op(GNTTABOP_query_size, &qs, 2), -XEN_EINVAL);
	qs.dom = 0x1234;
	qs.status = 99;
	XEN_EXPECT("query_size(domid 0x1234)", HYPERVISOR_grant_table_op(GNTTABOP_query_size, &qs, 1), 0);
	XEN_EXPECT("query_size(domid 0x1234).status", qs.status, GNTST_bad_domain);

	struct gnttab_get_version gv = { .dom = DOMID_SELF, .version = 99 };
	XEN_EXPECT("get_version(self)", HYPERVISOR_grant_table_op(GNTTABOP_get_version, &gv, 1), 0);
	XEN_EXPECT("get_version.version", gv.version, 1);
	gv.dom = 0x1234;
	XEN_EXPECT("get_version(domid 0x1234)", HYPERVISOR_grant_table_op(GNTTABOP_get_version, &gv, 1), -XEN_ESRCH);

	/* set_version writes the resulting version back in every case. */
	struct gnttab_set_version sv = { .version = 1 };
	XEN_EXPECT("set_version(1)", HYPERVISOR_grant_table_op(GNTTABOP_set_version, &sv, 1), 0);
	XEN_EXPECT("set_version(1) -> version", sv.version, 1);
	sv.version = 2;
	XEN_EXPECT("set_version(2) (v2 refused)", HYPERVISOR_grant_table_op(GNTTABOP_set_version, &sv, 1), -XEN_ENOSYS);
	XEN_EXPECT("set_version(2) -> version", sv.version, 1);
	sv.version = 3;
	XEN_EXPECT("set_version(3)", HYPERVISOR_grant_table_op(GNTTABOP_set_version, &sv, 1), -XEN_EINVAL);
	XEN_EXPECT("set_version(3) -> version", sv.version, 1);
	gv.dom = DOMID_SELF;
	XEN_EXPECT("get_version after v2 attempt", HYPERVISOR_grant_table_op(GNTTABOP_get_version, &gv, 1), 0);
	XEN_EXPECT("get_version.version", gv.version, 1);

	/* setup_table: an HVM guest gets the GFNs where its frames are mapped. */
	void *g0 = xen_scratch_page(0);
	struct xen_add_to_physmap x = {
		.domid = DOMID_SELF, .space = XENMAPSPACE_grant_table, .idx = 0, .gpfn = (uintptr_t)g0 >> 12,
	};
	XEN_EXPECT("add_to_physmap(grant_table, 0)", HYPERVISOR_memory_op(XENMEM_add_to_physmap, &x), 0);
	struct gnttab_setup_table st = {
		.dom = DOMID_SELF, .nr_frames = 1, .status = 99, .frame_list = (uintptr_t)frames,
	};
	frames[0] = 0xdeadbeef;
	XEN_EXPECT("setup_table(1 frame)", HYPERVISOR_grant_table_op(GNTTABOP_setup_table, &st, 1), 0);
	XEN_EXPECT("setup_table.status", st.status, GNTST_okay);
	XEN_EXPECT("setup_table.frame_list[0] == mapped gfn", frames[0], (uintptr_t)g0 >> 12);
	st.nr_frames = max + 1;
	st.status = 99;
	XEN_EXPECT("setup_table(max+1 frames)", HYPERVISOR_grant_table_op(GNTTABOP_setup_table, &st, 1), 0);
	XEN_EXPECT("setup_table(max+1).status", st.status, GNTST_general_error);
	st.nr_frames = 1;
	st.dom = 0x1234;
	st.status = 99;
	XEN_EXPECT("setup_table(domid 0x1234)", HYPERVISOR_grant_table_op(GNTTABOP_setup_table, &st, 1), 0);
	XEN_EXPECT("setup_table(domid 0x1234).status", st.status, GNTST_bad_domain);
	st.dom = DOMID_SELF;
	XEN_EXPECT("setup_table(count 2)", HYPERVISOR_grant_table_op(GNTTABOP_setup_table, &st, 2), -XEN_EINVAL);

	/* A frame_list Xen can't write is the op's status, not the call's errno
	 * (gnttab_setup_table: GNTST_bad_virt_addr at the first failed frame, return 0). */
	st.frame_list = XEN_KIT_UNMAPPED_VA;
	st.status = 99;
	XEN_EXPECT("setup_table(frame_list unmapped)", HYPERVISOR_grant_table_op(GNTTABOP_setup_table, &st, 1), 0);
	XEN_EXPECT("setup_table(frame_list unmapped).status", st.status, GNTST_bad_virt_addr);
	/* Frame by frame: the last 8 bytes of a mapped page, then an unmapped one. */
	uint64_t *edge = (uint64_t *)((char *)xen_map_4k(0, (uintptr_t)xen_scratch_page(1)) + 4096 - 8);
	xen_unmap_4k(1);
	*edge = 0xdeadbeef;
	st.frame_list = (uintptr_t)edge;
	st.nr_frames = 2;
	st.status = 99;
	XEN_EXPECT("setup_table(2 frames, 2nd unmapped)", HYPERVISOR_grant_table_op(GNTTABOP_setup_table, &st, 1), 0);
	XEN_EXPECT("setup_table(2 frames, 2nd unmapped).status", st.status, GNTST_bad_virt_addr);
	XEN_EXPECT("  frame_list[0] written before the fault", *edge, (uintptr_t)g0 >> 12);
	/* The status itself unwritable: the call fails. */
	XEN_EXPECT("setup_table(op unmapped)",
		   HYPERVISOR_grant_table_op(GNTTABOP_setup_table, (void *)XEN_KIT_UNMAPPED_VA, 1), -XEN_EFAULT);
	st.nr_frames = 1;
	st.frame_list = (uintptr_t)frames;

	/* Ops an HVM guest may not use, and unknown ones. */
	XEN_EXPECT("GNTTABOP_transfer (HVM)", HYPERVISOR_grant_table_op(GNTTABOP_transfer, &st, 1), -XEN_ENOSYS);
	XEN_EXPECT("GNTTABOP_get_status_frames (HVM)",
		   HYPERVISOR_grant_table_op(GNTTABOP_get_status_frames, &st, 1), -XEN_ENOSYS);
	XEN_EXPECT("grant_table_op 99 (unknown)", HYPERVISOR_grant_table_op(99, &st, 1), -XEN_ENOSYS);
	XEN_EXPECT("query_size(count 0x80000000)",
		   HYPERVISOR_grant_table_op(GNTTABOP_query_size, &qs, 0x80000000u), -XEN_EINVAL);
	xen_pass();
}
