/*
 * xen_pirq_negative: every PIRQ op with bad input gets Xen's errno and the VMM goes on
 * (xen/arch/x86/physdev.c, hvm/hypercall.c hvm_physdev_op, irq.c, common/event_channel.c).
 * The domain has 256 PIRQs (the VMM's default) and 24 GSIs (its I/OAPIC's pins).
 */
#include "xen.h"

#define NR_PIRQS 256

static long map_raw(struct physdev_map_pirq *m) { return HYPERVISOR_physdev_op(PHYSDEVOP_map_pirq, m); }

void kit_main(void)
{
	printf("xen_pirq_negative: PIRQ ops with bad arguments\n");
	xen_test_start("xen_pirq_negative");
	int p;
	uint32_t u;
	struct physdev_map_pirq m;

	/* physdev_map_pirq: only with a vector callback (is_hvm_pv_evtchn_domain) */
	p = -1;
	XEN_EXPECT("map_pirq(GSI 9) without a vector callback", xen_map_pirq_gsi(9, &p), -XEN_EINVAL);
	xen_use_upcall_vector();

	/* types other than GSI (physdev_hvm_map_pirq: "not supported yet") */
	m = (struct physdev_map_pirq){ .domid = DOMID_SELF, .type = MAP_PIRQ_TYPE_MSI, .index = -1, .pirq = -1 };
	XEN_EXPECT("map_pirq(MSI)", map_raw(&m), -XEN_EINVAL);
	m = (struct physdev_map_pirq){ .domid = DOMID_SELF, .type = MAP_PIRQ_TYPE_MSI_SEG, .index = 9, .pirq = -1 };
	XEN_EXPECT("map_pirq(MSI_SEG)", map_raw(&m), -XEN_EINVAL);
	XEN_EXPECT("map_pirq(MSI_SEG): type written back as MSI", m.type, MAP_PIRQ_TYPE_MSI);
	m = (struct physdev_map_pirq){ .domid = DOMID_SELF, .type = MAP_PIRQ_TYPE_MULTI_MSI, .pirq = -1,
				       .table_base = 0x1000 };
	XEN_EXPECT("map_pirq(MULTI_MSI, table_base)", map_raw(&m), -XEN_EINVAL);
	m = (struct physdev_map_pirq){ .domid = DOMID_SELF, .type = MAP_PIRQ_TYPE_UNKNOWN, .index = 9, .pirq = -1 };
	XEN_EXPECT("map_pirq(UNKNOWN)", map_raw(&m), -XEN_EINVAL);
	m = (struct physdev_map_pirq){ .domid = DOMID_SELF, .type = 0x7fffffff, .index = 9, .pirq = -1 };
	XEN_EXPECT("map_pirq(type 0x7fffffff)", map_raw(&m), -XEN_EINVAL);
	/* a domain that doesn't exist */
	m = (struct physdev_map_pirq){ .domid = 0x1234, .type = MAP_PIRQ_TYPE_GSI, .index = 9, .pirq = -1 };
	XEN_EXPECT("map_pirq(domid 0x1234)", map_raw(&m), -XEN_ESRCH);
	XEN_EXPECT("map_pirq(domid 0x1234): pirq untouched", m.pirq, -1);
	struct physdev_unmap_pirq um = { .domid = 0x1234, .pirq = 16 };
	XEN_EXPECT("unmap_pirq(domid 0x1234)", HYPERVISOR_physdev_op(PHYSDEVOP_unmap_pirq, &um), -XEN_ESRCH);
	/* our own domid by number is DOMID_SELF */
	if (xen_info.domid != ~0u) {
		m = (struct physdev_map_pirq){ .domid = (domid_t)xen_info.domid, .type = MAP_PIRQ_TYPE_GSI,
					       .index = 9, .pirq = -1 };
		XEN_EXPECT("map_pirq(our domid, GSI 9)", map_raw(&m), 0);
		XEN_EXPECT("map_pirq(our domid): pirq", m.pirq, 16);
		XEN_EXPECT("unmap_pirq(16)", xen_unmap_pirq(16), 0);
	}
	/* bad GSIs */
	const int bad_gsi[] = { -1, 24, 48, 0x7fffffff, (int)0x80000000 };
	for (unsigned i = 0; i < sizeof(bad_gsi) / sizeof(bad_gsi[0]); i++) {
		p = -1;
		XEN_EXPECT("map_pirq(bad GSI)", xen_map_pirq_gsi((unsigned)bad_gsi[i], &p), -XEN_EINVAL);
	}
	/* bad pirqs (a negative one means "allocate") */
	p = NR_PIRQS;
	XEN_EXPECT("map_pirq(GSI 9, pirq 256 = nr_pirqs)", xen_map_pirq_gsi(9, &p), -XEN_EINVAL);
	p = 0x7fffffff;
	XEN_EXPECT("map_pirq(GSI 9, pirq 0x7fffffff)", xen_map_pirq_gsi(9, &p), -XEN_EINVAL);
	p = -5;
	XEN_EXPECT("map_pirq(GSI 9, pirq -5 allocates)", xen_map_pirq_gsi(9, &p), 0);
	XEN_EXPECT("allocated", p, 16);
	XEN_EXPECT("unmap_pirq(16)", xen_unmap_pirq(16), 0);

	/* unmap: anything unmapped (or out of range) is 0 (domain_pirq_to_emuirq == IRQ_UNBOUND) */
	XEN_EXPECT("unmap_pirq(100) unmapped", xen_unmap_pirq(100), 0);
	XEN_EXPECT("unmap_pirq(-1)", xen_unmap_pirq(-1), 0);
	XEN_EXPECT("unmap_pirq(256)", xen_unmap_pirq(NR_PIRQS), 0);
	XEN_EXPECT("unmap_pirq(0x40000000)", xen_unmap_pirq(0x40000000), 0);

	/* eoi / irq_status_query */
	XEN_EXPECT("eoi(256)", xen_pirq_eoi(NR_PIRQS), -XEN_EINVAL);
	XEN_EXPECT("eoi(0xffffffff)", xen_pirq_eoi(0xffffffffu), -XEN_EINVAL);
	XEN_EXPECT("eoi(100) (no such pirq)", xen_pirq_eoi(100), -XEN_EINVAL);
	XEN_EXPECT("irq_status_query(256)", xen_pirq_status(NR_PIRQS, NULL), -XEN_EINVAL);
	XEN_EXPECT("irq_status_query(0xffffffff)", xen_pirq_status(0xffffffffu, NULL), -XEN_EINVAL);
	XEN_EXPECT("irq_status_query(100) unmapped", xen_pirq_status(100, NULL), -XEN_EINVAL);

	/* get_free_pirq: GSI type upwards from 16, others downwards from the top; reserved */
	XEN_EXPECT("get_free_pirq(GSI)", xen_get_free_pirq(MAP_PIRQ_TYPE_GSI, &u) ?: u, 16);
	XEN_EXPECT("get_free_pirq(GSI) again", xen_get_free_pirq(MAP_PIRQ_TYPE_GSI, &u) ?: u, 17);
	XEN_EXPECT("get_free_pirq(MSI)", xen_get_free_pirq(MAP_PIRQ_TYPE_MSI, &u) ?: u, 255);
	XEN_EXPECT("get_free_pirq(MSI) again", xen_get_free_pirq(MAP_PIRQ_TYPE_MSI, &u) ?: u, 254);
	XEN_EXPECT("get_free_pirq(type 99: as MSI)", xen_get_free_pirq(99, &u) ?: u, 253);
	XEN_EXPECT("irq_status_query(255) reserved, not mapped", xen_pirq_status(255, NULL), -XEN_EINVAL);
	XEN_EXPECT("eoi(255) reserved (the pirq exists)", xen_pirq_eoi(255), 0);
	p = -1;
	XEN_EXPECT("map_pirq(GSI 9, -1) skips reserved 16, 17", xen_map_pirq_gsi(9, &p) ?: p, 18);
	p = 17;
	XEN_EXPECT("map_pirq(GSI 10, reserved pirq 17)", xen_map_pirq_gsi(10, &p), 0);
	XEN_EXPECT("irq_status_query(17)", xen_pirq_status(17, NULL), 0);

	/* bind_pirq */
	evtchn_port_t port, port2;
	XEN_EXPECT("bind_pirq(256)", xen_bind_pirq(NR_PIRQS, 0, NULL), -XEN_EINVAL);
	XEN_EXPECT("bind_pirq(0xffffffff)", xen_bind_pirq(0xffffffffu, 0, NULL), -XEN_EINVAL);
	XEN_EXPECT("bind_pirq(100) unmapped (HVM: allowed)", xen_bind_pirq(100, 0, &port), 0);
	XEN_EXPECT("bind_pirq(100) again", xen_bind_pirq(100, 0, NULL), -XEN_EEXIST);
	struct evtchn_status st;
	XEN_EXPECT("status(pirq port).status", xen_evtchn_status(port, &st) ?: st.status, EVTCHNSTAT_pirq);
	XEN_EXPECT("status(pirq port).u.pirq", st.u.pirq, 100);
	XEN_EXPECT("send(pirq port)", xen_evtchn_send(port), -XEN_EINVAL);
	XEN_EXPECT("bind_vcpu(pirq port, vcpu 1) with 1 vCPU", xen_evtchn_bind_vcpu(port, 1), -XEN_ENOENT);
	XEN_EXPECT("bind_vcpu(pirq port, 0)", xen_evtchn_bind_vcpu(port, 0), 0);
	XEN_EXPECT("eoi(100) bound, unmapped", xen_pirq_eoi(100), 0);
	XEN_EXPECT("close(pirq port)", xen_evtchn_close(port), 0);
	XEN_EXPECT("close(pirq port) again", xen_evtchn_close(port), -XEN_EINVAL);
	XEN_EXPECT("bind_pirq(100) after close", xen_bind_pirq(100, 0xffffffffu, &port2), 0);
	XEN_EXPECT("bind_pirq(18) (mapped)", xen_bind_pirq(18, 0, &port), 0);
	struct evtchn_reset rs = { .dom = DOMID_SELF };
	XEN_EXPECT("EVTCHNOP_reset", HYPERVISOR_event_channel_op(EVTCHNOP_reset, &rs), 0);
	XEN_EXPECT("bind_pirq(100) after reset", xen_bind_pirq(100, 0, &port), 0);
	XEN_EXPECT("irq_status_query(18) after reset (mapping kept)", xen_pirq_status(18, NULL), 0);

	/* ops an HVM domU doesn't have (hvm_physdev_op: -ENOSYS) */
	static const int nosys[] = { 4 /* IRQ_UNMASK_NOTIFY */, 6 /* set_iopl */, 8 /* apic_read */,
				     10 /* alloc_irq_vector */, 17 /* pirq_eoi_gmfn_v1 */, 19 /* restore_msi */,
				     PHYSDEVOP_setup_gsi, 24 /* pci_mmcfg_reserved */, 25 /* pci_device_add */,
				     28 /* pirq_eoi_gmfn_v2 */, 29 /* dbgp_op */, 30 /* prepare_msix */, 99 };
	for (unsigned i = 0; i < sizeof(nosys) / sizeof(nosys[0]); i++) {
		XEN_EXPECT("physdev_op (not for an HVM domU)", HYPERVISOR_physdev_op(nosys[i], xen_scratch_page(0)),
			   -XEN_ENOSYS);
	}
	/* unmapped guest memory */
	XEN_EXPECT("map_pirq(unmapped pointer)",
		   HYPERVISOR_physdev_op(PHYSDEVOP_map_pirq, (void *)XEN_KIT_UNMAPPED_VA), -XEN_EFAULT);
	XEN_EXPECT("eoi(unmapped pointer)",
		   HYPERVISOR_physdev_op(PHYSDEVOP_eoi, (void *)XEN_KIT_UNMAPPED_VA), -XEN_EFAULT);

	/* exhaustion: -ENOSPC; map_pirq(-1) then fails with -EINVAL and writes -ENOSPC back */
	unsigned got = 0;
	long rc;
	while ((rc = xen_get_free_pirq(MAP_PIRQ_TYPE_MSI, &u)) == 0 && got < 1000)
		got++;
	XEN_EXPECT("get_free_pirq(MSI) when all are taken", rc, -XEN_ENOSPC);
	printf("xen_pirq_negative: %u more MSI-type pirqs were free\n", got);
	while ((rc = xen_get_free_pirq(MAP_PIRQ_TYPE_GSI, &u)) == 0 && got < 1000)
		got++;
	XEN_EXPECT("get_free_pirq(GSI) when all are taken", rc, -XEN_ENOSPC);
	p = -1;
	XEN_EXPECT("map_pirq(GSI 11, -1) with no pirq free", xen_map_pirq_gsi(11, &p), -XEN_EINVAL);
	XEN_EXPECT("map_pirq: pirq written back", p, -XEN_ENOSPC);
	xen_pass();
}
