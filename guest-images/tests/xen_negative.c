/*
 * xen_negative: how Xen rejects bad input from an HVM guest.
 *  - bad ports (>= 4096, the 2-level limit for a 64-bit guest) -> -EINVAL;
 *    bad vCPUs -> -ENOENT (event_channel.c, domain.c domain_vcpu);
 *  - pointers are guest-virtual: copies that hit an unmapped virtual page,
 *    or a mapped page that is not RAM, fail with -EFAULT; a structure that
 *    straddles two virtual pages backed by non-adjacent frames, or sits at an
 *    odd address, works (Xen copies through the guest page tables, page by
 *    page: hvm_copy_{to,from}_guest_linear);
 *  - huge counts fail fast: SCHEDOP_poll nr_ports > 128 -> -EINVAL,
 *    add_to_physmap_batch over an unmapped array -> -EFAULT, memory_op
 *    reservations with nr_extents > UINT_MAX >> 6 -> 0 extents done,
 *    grant_table_op (int)count < 0 -> -EINVAL, console_io of a huge count
 *    from an unmapped buffer -> -EFAULT;
 *  - unknown hypercalls and sub-ops -> -ENOSYS (hypercall-defs.c: no HVM
 *    handler for PV-only calls such as mmu_update);
 * Hypercalls from CPL 3 are in xen_negative_cpl3.
 */
#include "xen.h"

#define NAME "xen_negative"

void kit_main(void)
{
	printf(NAME ": bad ports, bad vCPUs, bad pointers, huge counts, unknown calls\n");
	xen_test_start(NAME);
	void *unmapped = (void *)XEN_KIT_UNMAPPED_VA;

	/* Bad ports */
	static const evtchn_port_t bad_ports[] = { 4096, 0x10000, 0xffffffff };
	for (unsigned i = 0; i < 3; i++) {
		evtchn_port_t p = bad_ports[i];
		struct evtchn_status st;
		printf(NAME ": port %#x:\n", p);
		XEN_EXPECT("  send", xen_evtchn_send(p), -XEN_EINVAL);
		XEN_EXPECT("  close", xen_evtchn_close(p), -XEN_EINVAL);
		XEN_EXPECT("  status", xen_evtchn_status(p, &st), -XEN_EINVAL);
		XEN_EXPECT("  unmask", xen_evtchn_unmask(p), -XEN_EINVAL);
		XEN_EXPECT("  bind_vcpu", xen_evtchn_bind_vcpu(p, 0), -XEN_EINVAL);
		XEN_EXPECT("  bind_interdomain(self)", xen_evtchn_bind_interdomain(DOMID_SELF, p, NULL), -XEN_EINVAL);
	}

	/* Bad vCPUs (one vCPU configured) */
	static const uint32_t bad_vcpus[] = { 1, 64, 0x80000000u };
	for (unsigned i = 0; i < 3; i++) {
		uint32_t v = bad_vcpus[i];
		printf(NAME ": vcpu %#x:\n", v);
		XEN_EXPECT("  bind_ipi", xen_evtchn_bind_ipi(v, NULL), -XEN_ENOENT);
		XEN_EXPECT("  bind_virq(TIMER)", xen_evtchn_bind_virq(VIRQ_TIMER, v, NULL), -XEN_ENOENT);
		XEN_EXPECT("  vcpu_op(is_up)", HYPERVISOR_vcpu_op(VCPUOP_is_up, v, NULL), -XEN_ENOENT);
		XEN_EXPECT("  vcpu_op(stop_periodic_timer)", HYPERVISOR_vcpu_op(VCPUOP_stop_periodic_timer, v, NULL),
			   -XEN_ENOENT);
		XEN_EXPECT("  set_evtchn_upcall_vector", xen_set_upcall_vector(v, 0xf3), -XEN_ENOENT);
	}

	/* -EFAULT: unmapped virtual address */
	printf(NAME ": argument at unmapped VA %p:\n", unmapped);
	XEN_EXPECT("  xen_version(extraversion)", HYPERVISOR_xen_version(XENVER_extraversion, unmapped), -XEN_EFAULT);
	XEN_EXPECT("  evtchn alloc_unbound", HYPERVISOR_event_channel_op(EVTCHNOP_alloc_unbound, unmapped), -XEN_EFAULT);
	XEN_EXPECT("  evtchn send", HYPERVISOR_event_channel_op(EVTCHNOP_send, unmapped), -XEN_EFAULT);
	XEN_EXPECT("  hvm_op(get_param)", HYPERVISOR_hvm_op(HVMOP_get_param, unmapped), -XEN_EFAULT);
	XEN_EXPECT("  sched_op(poll)", HYPERVISOR_sched_op(SCHEDOP_poll, unmapped), -XEN_EFAULT);
	XEN_EXPECT("  vcpu_op(register_vcpu_info)", HYPERVISOR_vcpu_op(VCPUOP_register_vcpu_info, 0, unmapped),
		   -XEN_EFAULT);
	XEN_EXPECT("  grant_table_op(query_size)", HYPERVISOR_grant_table_op(GNTTABOP_query_size, unmapped, 1),
		   -XEN_EFAULT);
	XEN_EXPECT("  memory_op(add_to_physmap)", HYPERVISOR_memory_op(XENMEM_add_to_physmap, unmapped), -XEN_EFAULT);
	XEN_EXPECT("  memory_op(decrease_reservation) (extents done, not an errno)",
		   HYPERVISOR_memory_op(XENMEM_decrease_reservation, unmapped), 0);
	XEN_EXPECT("  console_io(write, 4)", HYPERVISOR_console_io(CONSOLEIO_write, 4, unmapped), -XEN_EFAULT);
	/* ... but an area *at* an unmapped address is registered: Xen ignores the first copy
	 * (runstate and vcpu_time areas alike: both arguments are one guest address). */
	static const struct { int cmd; const char *name; } areas[] = {
		{ VCPUOP_register_runstate_memory_area, "register_runstate_memory_area" },
		{ VCPUOP_register_vcpu_time_memory_area, "register_vcpu_time_memory_area" },
	};
	for (unsigned i = 0; i < 2; i++) {
		static struct vcpu_register_runstate_memory_area area;
		area.addr = (uintptr_t)unmapped;
		printf("  %s:\n", areas[i].name);
		XEN_EXPECT("    at the unmapped VA", HYPERVISOR_vcpu_op(areas[i].cmd, 0, &area), 0);
		area.addr = 0;
		XEN_EXPECT("    at 0 (off)", HYPERVISOR_vcpu_op(areas[i].cmd, 0, &area), 0);
	}

	/* -EFAULT: mapped, but not RAM (identity-mapped and through the 4K window) */
	uint64_t hole = xen_unbacked_paddr();
	void *hole_id = (void *)(uintptr_t)hole;
	void *hole_va = xen_map_4k(20, hole);
	printf(NAME ": argument at %#lx (mapped, not RAM) and at VA %p -> it:\n", (unsigned long)hole, hole_va);
	XEN_EXPECT("  xen_version(extraversion), identity VA", HYPERVISOR_xen_version(XENVER_extraversion, hole_id),
		   -XEN_EFAULT);
	XEN_EXPECT("  evtchn alloc_unbound, window VA", HYPERVISOR_event_channel_op(EVTCHNOP_alloc_unbound, hole_va),
		   -XEN_EFAULT);
	XEN_EXPECT("  hvm_op(get_param), window VA", HYPERVISOR_hvm_op(HVMOP_get_param, hole_va), -XEN_EFAULT);

	/* Straddling and odd addresses work: two virtual pages on non-adjacent frames. */
	uint8_t *fa = xen_scratch_page(5), *fb = xen_scratch_page(2);
	memset(fa, 0, 4096);
	memset(fb, 0, 4096);
	uint8_t *w = xen_map_4k(30, (uintptr_t)fa);
	xen_map_4k(31, (uintptr_t)fb);
	struct evtchn_alloc_unbound *au = (void *)(w + 4096 - 4);	/* dom, remote | port */
	au->dom = DOMID_SELF;
	au->remote_dom = DOMID_SELF;
	XEN_EXPECT("alloc_unbound with the struct across two non-adjacent frames",
		   HYPERVISOR_event_channel_op(EVTCHNOP_alloc_unbound, au), 0);
	uint32_t port_phys = *(volatile uint32_t *)fb;			/* .port is on the second frame */
	XEN_CHECK(port_phys == au->port && port_phys != 0, "port %u via VA, %u in the second frame\n",
		  au->port, port_phys);
	struct evtchn_status st;
	XEN_EXPECT("status(that port)", xen_evtchn_status(port_phys, &st) ?: st.status, EVTCHNSTAT_unbound);
	printf(NAME ": port %u written across the page boundary into the right frame ok\n", port_phys);
	char ref[16], *ev = (char *)(w + 4096 - 7);
	XEN_EXPECT("xen_version(extraversion)", HYPERVISOR_xen_version(XENVER_extraversion, ref), 0);
	XEN_EXPECT("xen_version(extraversion) across the boundary", HYPERVISOR_xen_version(XENVER_extraversion, ev), 0);
	XEN_CHECK(!memcmp(ev, ref, 16) && !memcmp(fa + 4089, ref, 7) && !memcmp(fb, ref + 7, 9),
		  "straddling string differs\n");
	struct evtchn_status *odd = (void *)(fa + 1);
	memset(odd, 0, sizeof(*odd));
	odd->dom = DOMID_SELF;
	odd->port = port_phys;
	XEN_EXPECT("status() with the struct at an odd address", HYPERVISOR_event_channel_op(EVTCHNOP_status, odd), 0);
	XEN_EXPECT("  .status", odd->status, EVTCHNSTAT_unbound);
	/* A struct that runs from a good page into an unmapped one: -EFAULT. */
	xen_unmap_4k(31);
	XEN_EXPECT("alloc_unbound with the struct running into an unmapped page",
		   HYPERVISOR_event_channel_op(EVTCHNOP_alloc_unbound, au), -XEN_EFAULT);

	/* Huge counts */
	evtchn_port_t ports[2] = { port_phys, port_phys };
	struct sched_poll sp = { .ports = (uintptr_t)ports, .nr_ports = 0x10000, .timeout = xen_now() + XEN_MS(10) };
	XEN_EXPECT("poll(nr_ports 0x10000)", HYPERVISOR_sched_op(SCHEDOP_poll, &sp), -XEN_EINVAL);
	sp.nr_ports = 129;
	XEN_EXPECT("poll(nr_ports 129)", HYPERVISOR_sched_op(SCHEDOP_poll, &sp), -XEN_EINVAL);
	sp.ports = XEN_KIT_UNMAPPED_VA;
	sp.nr_ports = 2;
	XEN_EXPECT("poll(ports array unmapped)", HYPERVISOR_sched_op(SCHEDOP_poll, &sp), -XEN_EFAULT);
	static int32_t errs[4];
	struct xen_add_to_physmap_batch b = {
		.domid = DOMID_SELF, .space = XENMAPSPACE_grant_table, .size = 0xffff,
		.idxs = XEN_KIT_UNMAPPED_VA, .gpfns = XEN_KIT_UNMAPPED_VA, .errs = (uintptr_t)errs,
	};
	XEN_EXPECT("add_to_physmap_batch(size 0xffff, unmapped arrays)",
		   HYPERVISOR_memory_op(XENMEM_add_to_physmap_batch, &b), -XEN_EFAULT);
	static uint64_t gpfn;
	gpfn = (uintptr_t)xen_scratch_page(6) >> 12;
	struct xen_memory_reservation r = {
		.extent_start = (uintptr_t)&gpfn, .nr_extents = ~0ULL, .domid = DOMID_SELF,
	};
	XEN_EXPECT("decrease_reservation(nr_extents ~0)", HYPERVISOR_memory_op(XENMEM_decrease_reservation, &r), 0);
	r.nr_extents = 0x4000000;	/* UINT_MAX >> 6 + 1 */
	XEN_EXPECT("populate_physmap(nr_extents 2^26)", HYPERVISOR_memory_op(XENMEM_populate_physmap, &r), 0);
	r.nr_extents = 16;
	r.extent_start = XEN_KIT_UNMAPPED_VA;
	XEN_EXPECT("decrease_reservation(16, unmapped list)", HYPERVISOR_memory_op(XENMEM_decrease_reservation, &r), 0);
	struct gnttab_query_size qs = { .dom = DOMID_SELF };
	XEN_EXPECT("grant_table_op(query_size, count 0x80000000)",
		   HYPERVISOR_grant_table_op(GNTTABOP_query_size, &qs, 0x80000000u), -XEN_EINVAL);
	XEN_EXPECT("console_io(write, 0x7fffffff, unmapped)",
		   HYPERVISOR_console_io(CONSOLEIO_write, 0x7fffffff, unmapped), -XEN_EFAULT);

	/* Unknown hypercalls (no HVM handler) and sub-ops */
	static const unsigned nosys[] = {
		__HYPERVISOR_set_trap_table, __HYPERVISOR_mmu_update, __HYPERVISOR_set_gdt,
		__HYPERVISOR_stack_switch, __HYPERVISOR_set_callbacks, __HYPERVISOR_sched_op_compat,
		__HYPERVISOR_update_va_mapping, __HYPERVISOR_event_channel_op_compat,
		__HYPERVISOR_physdev_op_compat, __HYPERVISOR_set_segment_base, __HYPERVISOR_nmi_op,
		__HYPERVISOR_callback_op, 39, 43, 47, __HYPERVISOR_arch_7, 63, 100, 127,
	};
	for (unsigned i = 0; i < sizeof(nosys) / sizeof(nosys[0]); i++) {
		long rc = xen_hypercall_raw(nosys[i], 0, 0, 0, 0, 0);
		if (rc != -XEN_ENOSYS)
			xen_check_failed(__FILE__, __LINE__, "hypercall %u = %ld, want -ENOSYS", nosys[i], rc);
	}
	printf(NAME ": %u unknown/PV-only hypercalls = -ENOSYS ok\n", (unsigned)(sizeof(nosys) / sizeof(nosys[0])));
	XEN_EXPECT("xen_version 99", HYPERVISOR_xen_version(99, NULL), -XEN_ENOSYS);
	XEN_EXPECT("memory_op 99", HYPERVISOR_memory_op(99, NULL), -XEN_ENOSYS);
	XEN_EXPECT("hvm_op 99", HYPERVISOR_hvm_op(99, NULL), -XEN_ENOSYS);
	XEN_EXPECT("vcpu_op 99", HYPERVISOR_vcpu_op(99, 0, NULL), -XEN_ENOSYS);
	XEN_EXPECT("sched_op 99", HYPERVISOR_sched_op(99, NULL), -XEN_ENOSYS);
	XEN_EXPECT("event_channel_op 99", HYPERVISOR_event_channel_op(99, NULL), -XEN_ENOSYS);
	XEN_EXPECT("grant_table_op 99", HYPERVISOR_grant_table_op(99, NULL, 1), -XEN_ENOSYS);
	XEN_EXPECT("physdev_op 99", HYPERVISOR_physdev_op(99, NULL), -XEN_ENOSYS);

	/* The toolstack's hypercalls are in the HVM table (include/hypercall-defs.c: domctl,
	 * sysctl, platform_op for hvm64) but refused to a domU: with a readable op of Xen
	 * 4.17's interface version, domctl.c/sysctl.c/platform_hypercall.c reach the XSM
	 * check (XSM_PRIV) -> -EPERM.  Ops: {cmd, interface_version, domain (domctl)}. */
	static uint32_t priv_op[64];
	priv_op[0] = 1;				/* createdomain / readconsole / settime32 */
	priv_op[1] = 0x15;			/* XEN_{DOM,SYS}CTL_INTERFACE_VERSION in 4.17 */
	priv_op[2] = DOMID_SELF;
	XEN_EXPECT("domctl (domU)", xen_hypercall_raw(__HYPERVISOR_domctl, (uintptr_t)priv_op, 0, 0, 0, 0),
		   -XEN_EPERM);
	XEN_EXPECT("sysctl (domU)", xen_hypercall_raw(__HYPERVISOR_sysctl, (uintptr_t)priv_op, 0, 0, 0, 0),
		   -XEN_EPERM);
	priv_op[1] = 0x03000001;		/* XENPF_INTERFACE_VERSION */
	XEN_EXPECT("platform_op (domU)", xen_hypercall_raw(__HYPERVISOR_platform_op, (uintptr_t)priv_op, 0, 0, 0, 0),
		   -XEN_EPERM);
	xen_pass();
}
