/*
 * xen_version: the Xen CPUID leaves and every XENVER_* sub-op of
 * __HYPERVISOR_xen_version, as Xen answers an unprivileged HVM guest
 * (xen/common/kernel.c do_xen_version, xen/include/xsm/dummy.h
 * xsm_xen_version).  cmdline "xenver=0x40011" also checks the version
 * number itself (--xen-version 4.17).
 */
#include "xen.h"

static const char *const feat_names[] = {
	"writable_page_tables", "writable_descriptor_tables", "auto_translated_physmap",
	"supervisor_mode_kernel", "pae_pgdir_above_4gb", "mmu_pt_update_preserve_ad",
	"highmem_assist", "gnttab_map_avail_bits", "hvm_callback_vector", "hvm_safe_pvclock",
	"hvm_pirqs", "dom0", "grant_map_identity", "memory_op_vnode_supported",
};

static bool nul_terminated(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!s[i])
			return true;
	return false;
}

static char big[1024];

void kit_main(void)
{
	printf("xen_version: Xen CPUID leaves and XENVER_* sub-ops\n");
	xen_test_start("xen_version");
	uint32_t base = xen_info.base;

	/* CPUID (public/arch-x86/cpuid.h) */
	XEN_CHECK(xen_info.max_leaf >= base + 4, "CPUID base EAX %#x < base+4\n", xen_info.max_leaf);
	XEN_EXPECT("CPUID base+2 EAX (hypercall pages)", xen_info.hcall_pages, 1);
	for (unsigned sub = 0; sub < 3; sub++) {
		struct cpuid r = cpuid(base + 3, sub);
		printf("xen_version: CPUID base+3.%u (time) = %#x %#x %#x %#x\n", sub, r.a, r.b, r.c, r.d);
	}
	struct cpuid l4 = cpuid(base + 4, 0);
	printf("xen_version: CPUID base+4 = %#x %#x %#x %#x\n", l4.a, l4.b, l4.c, l4.d);
	XEN_CHECK(l4.a & XEN_HVM_CPUID_VCPU_ID_PRESENT, "VCPU_ID_PRESENT missing\n");
	XEN_EXPECT("CPUID base+4 EBX (vcpu id of the BSP)", l4.b, 0);
	XEN_CHECK(l4.a & XEN_HVM_CPUID_UPCALL_VECTOR, "UPCALL_VECTOR missing\n");
	printf("xen_version: CPUID base+4 flags VCPU_ID_PRESENT UPCALL_VECTOR ok\n");

	/* XENVER_version: (major << 16) | minor, the same as CPUID base+1 EAX. */
	long v = HYPERVISOR_xen_version(XENVER_version, NULL);
	XEN_EXPECT("XENVER_version == CPUID base+1", v, (long)xen_info.version);
	uint64_t want = xen_cmdline_u64("xenver", 0);
	if (want)
		XEN_EXPECT("XENVER_version == cmdline xenver", v, (long)want);
	printf("xen_version: Xen %ld.%ld\n", v >> 16, v & 0xffff);

	/* Strings: copied in full (copy_to_guest of the whole array), NUL-terminated. */
	char extra[16];
	memset(extra, 0xff, sizeof(extra));
	XEN_EXPECT("XENVER_extraversion", HYPERVISOR_xen_version(XENVER_extraversion, extra), 0);
	XEN_CHECK(nul_terminated(extra, sizeof(extra)), "extraversion not NUL-terminated\n");
	printf("xen_version: extraversion \"%s\"\n", extra);

	static struct xen_compile_info ci;
	memset(&ci, 0xff, sizeof(ci));
	XEN_EXPECT("XENVER_compile_info", HYPERVISOR_xen_version(XENVER_compile_info, &ci), 0);
	XEN_CHECK(nul_terminated(ci.compiler, 64) && nul_terminated(ci.compile_by, 16) &&
		  nul_terminated(ci.compile_domain, 32) && nul_terminated(ci.compile_date, 32),
		  "compile_info strings not NUL-terminated\n");
	printf("xen_version: compiler \"%s\" by \"%s\" date \"%s\"\n", ci.compiler, ci.compile_by,
	       ci.compile_date);

	memset(big, 0xff, sizeof(big));
	XEN_EXPECT("XENVER_capabilities", HYPERVISOR_xen_version(XENVER_capabilities, big), 0);
	XEN_CHECK(nul_terminated(big, sizeof(big)), "capabilities not NUL-terminated\n");
	printf("xen_version: capabilities \"%s\"\n", big);
	bool hvm64 = false;
	for (const char *p = big; *p; p++)
		if (!memcmp(p, "hvm-3.0-x86_64", 14))
			hvm64 = true;
	XEN_CHECK(hvm64, "capabilities lack \"hvm-3.0-x86_64\" (arch_get_xen_caps)\n");

	char chg[64];
	memset(chg, 0xff, sizeof(chg));
	XEN_EXPECT("XENVER_changeset", HYPERVISOR_xen_version(XENVER_changeset, chg), 0);
	XEN_CHECK(nul_terminated(chg, sizeof(chg)), "changeset not NUL-terminated\n");
	printf("xen_version: changeset \"%s\"\n", chg);

	struct xen_platform_parameters pp = { 0 };
	XEN_EXPECT("XENVER_platform_parameters", HYPERVISOR_xen_version(XENVER_platform_parameters, &pp), 0);
	XEN_EXPECT("platform_parameters.virt_start == HYPERVISOR_VIRT_START",
		   pp.virt_start, XEN_HYPERVISOR_VIRT_START_64);

	/* Features: submap 0 only. */
	struct xen_feature_info fi = { .submap_idx = 0, .submap = 0xdeadbeef };
	XEN_EXPECT("XENVER_get_features(0)", HYPERVISOR_xen_version(XENVER_get_features, &fi), 0);
	printf("xen_version: features submap 0 = %#x:", fi.submap);
	for (unsigned b = 0; b < 32; b++)
		if (fi.submap & (1u << b))
			printf(" %u(%s)", b, b < sizeof(feat_names) / sizeof(feat_names[0]) ? feat_names[b] : "?");
	printf("\n");
	XEN_CHECK(fi.submap & (1u << XENFEAT_hvm_callback_vector), "hvm_callback_vector (8) missing\n");
	XEN_CHECK(fi.submap & (1u << XENFEAT_hvm_safe_pvclock), "hvm_safe_pvclock (9) missing\n");
	printf("xen_version: XENFEAT_hvm_callback_vector and XENFEAT_hvm_safe_pvclock set ok\n");
	fi.submap_idx = 1;
	XEN_EXPECT("XENVER_get_features(1)", HYPERVISOR_xen_version(XENVER_get_features, &fi), -XEN_EINVAL);

	XEN_EXPECT("XENVER_pagesize(NULL)", HYPERVISOR_xen_version(XENVER_pagesize, NULL), 4096);
	XEN_EXPECT("XENVER_pagesize(non-NULL)", HYPERVISOR_xen_version(XENVER_pagesize, big), -XEN_EINVAL);

	uint8_t handle[16];
	memset(handle, 0xee, sizeof(handle));
	XEN_EXPECT("XENVER_guest_handle", HYPERVISOR_xen_version(XENVER_guest_handle, handle), 0);
	printf("xen_version: guest handle ");
	for (int i = 0; i < 16; i++)
		printf("%02x", handle[i]);
	printf("\n");

	/* Privileged for a domU (XSM_PRIV): commandline answers "<denied>", build_id -EPERM. */
	memset(big, 0xff, sizeof(big));
	long rc = HYPERVISOR_xen_version(XENVER_commandline, big);
	XEN_CHECK(rc == 0 && !strcmp(big, "<denied>") && (uint8_t)big[9] == 0xff,
		  "XENVER_commandline = %ld\n", rc);
	printf("xen_version: XENVER_commandline = %ld%s%s%s\n", rc, rc ? "" : " \"", rc ? "" : big,
	       rc ? "" : "\"");
	struct { uint32_t len; uint8_t buf[64]; } bid = { .len = 64 };
	rc = HYPERVISOR_xen_version(XENVER_build_id, &bid);
	XEN_CHECK(rc < 0, "XENVER_build_id = %ld, want an error for a domU\n", rc);
	printf("xen_version: XENVER_build_id = %ld (%s)\n", rc, xen_strerror(rc));

	XEN_EXPECT("XENVER 99 (unknown)", HYPERVISOR_xen_version(99, NULL), -XEN_ENOSYS);
	xen_pass();
}
