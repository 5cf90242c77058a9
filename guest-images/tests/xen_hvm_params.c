/*
 * xen_hvm_params: __HYPERVISOR_hvm_op set/get_param, set_evtchn_upcall_vector
 * argument checks and pagetable_dying (xen/arch/x86/hvm/hvm.c do_hvm_op,
 * hvm_allow_set_param, hvm_allow_get_param, hvmop_set_evtchn_upcall_vector).
 * No xenstore and no PV console: their params read as 0 (as QEMU answers).
 */
#include "xen.h"

static long param_op(unsigned op, domid_t dom, uint32_t index, uint64_t *value)
{
	struct xen_hvm_param p = { .domid = dom, .index = index, .value = value ? *value : 0 };
	long rc = HYPERVISOR_hvm_op(op, &p);
	if (value)
		*value = p.value;
	return rc;
}

void kit_main(void)
{
	printf("xen_hvm_params: HVMOP_set/get_param, upcall-vector checks, pagetable_dying\n");
	xen_test_start("xen_hvm_params");
	uint64_t v;

	/* The toolstack's PV console (xg_dom_x86.c special pages): its page and a port. */
	XEN_EXPECT("get_param(CONSOLE_PFN)", xen_hvm_get_param(HVM_PARAM_CONSOLE_PFN, &v), 0);
	XEN_EXPECT("CONSOLE_PFN", v, XEN_SPECIAL_PFN(XEN_SPECIALPAGE_CONSOLE));
	XEN_EXPECT("get_param(CONSOLE_EVTCHN)", xen_hvm_get_param(HVM_PARAM_CONSOLE_EVTCHN, &v), 0);
	XEN_CHECK(v != 0, "CONSOLE_EVTCHN is 0\n");
	uint64_t store_pfn = 0, store_evtchn = 0;
	XEN_EXPECT("get_param(STORE_PFN)", xen_hvm_get_param(HVM_PARAM_STORE_PFN, &store_pfn), 0);
	XEN_EXPECT("get_param(STORE_EVTCHN)", xen_hvm_get_param(HVM_PARAM_STORE_EVTCHN, &store_evtchn), 0);
	XEN_EXPECT("STORE_PFN", store_pfn, XEN_SPECIAL_PFN(XEN_SPECIALPAGE_XENSTORE));
	XEN_CHECK(store_evtchn != 0 && store_evtchn != v, "STORE_EVTCHN %lu (CONSOLE_EVTCHN %lu)\n",
		  (unsigned long)store_evtchn, (unsigned long)v);

	/* CALLBACK_IRQ round trip (the guest may set it; Xen stores the raw value). */
	XEN_EXPECT("get_param(CALLBACK_IRQ) initially", xen_hvm_get_param(HVM_PARAM_CALLBACK_IRQ, &v), 0);
	XEN_EXPECT("CALLBACK_IRQ initial value", v, 0);
	XEN_EXPECT("set_param(CALLBACK_IRQ, vector 0xf3)",
		   xen_hvm_set_param(HVM_PARAM_CALLBACK_IRQ, HVM_CALLBACK_VECTOR(0xf3)), 0);
	XEN_EXPECT("get_param(CALLBACK_IRQ)", xen_hvm_get_param(HVM_PARAM_CALLBACK_IRQ, &v), 0);
	XEN_CHECK(v == HVM_CALLBACK_VECTOR(0xf3), "CALLBACK_IRQ reads %#lx\n", v);
	printf("xen_hvm_params: CALLBACK_IRQ reads back %#lx ok\n", v);
	/* Xen stores any vector (hvm_set_callback_via); KVM's acceleration refuses 1..15, which
	 * must not surface as an error (the VMM injects such a vector itself). */
	XEN_EXPECT("set_param(CALLBACK_IRQ, vector 0x05)",
		   xen_hvm_set_param(HVM_PARAM_CALLBACK_IRQ, HVM_CALLBACK_VECTOR(0x05)), 0);
	XEN_EXPECT("get_param(CALLBACK_IRQ)", xen_hvm_get_param(HVM_PARAM_CALLBACK_IRQ, &v), 0);
	XEN_CHECK(v == HVM_CALLBACK_VECTOR(0x05), "CALLBACK_IRQ reads %#lx\n", v);
	XEN_EXPECT("set_param(CALLBACK_IRQ, 0) (off)", xen_hvm_set_param(HVM_PARAM_CALLBACK_IRQ, 0), 0);
	XEN_EXPECT("get_param(CALLBACK_IRQ) after off", xen_hvm_get_param(HVM_PARAM_CALLBACK_IRQ, &v), 0);
	XEN_EXPECT("CALLBACK_IRQ value after off", v, 0);

	/* Toolstack-only params are read-only for the guest itself. */
	XEN_EXPECT("set_param(STORE_PFN) by the guest", xen_hvm_set_param(HVM_PARAM_STORE_PFN, 0x1000), -XEN_EPERM);
	XEN_EXPECT("set_param(CONSOLE_PFN) by the guest", xen_hvm_set_param(HVM_PARAM_CONSOLE_PFN, 0x1000), -XEN_EPERM);
	v = 0;
	XEN_EXPECT("get_param(index 1000)", param_op(HVMOP_get_param, DOMID_SELF, 1000, &v), -XEN_EINVAL);
	XEN_EXPECT("set_param(index 1000)", param_op(HVMOP_set_param, DOMID_SELF, 1000, &v), -XEN_EINVAL);
	XEN_EXPECT("get_param(domid 0x1234)", param_op(HVMOP_get_param, 0x1234, HVM_PARAM_STORE_PFN, &v), -XEN_ESRCH);

	/* set_evtchn_upcall_vector: vector < 0x10 -> -EINVAL, no such vCPU -> -ENOENT. */
	XEN_EXPECT("set_evtchn_upcall_vector(vcpu 0, 0x0f)", xen_set_upcall_vector(0, 0x0f), -XEN_EINVAL);
	XEN_EXPECT("set_evtchn_upcall_vector(vcpu 64, 0xf3)", xen_set_upcall_vector(64, 0xf3), -XEN_ENOENT);

	/* pagetable_dying: Linux's probe; any error disables it (Xen with HAP: -EINVAL, QEMU: -ENOSYS). */
	struct xen_hvm_pagetable_dying pd = { .domid = DOMID_SELF, .gpa = read_cr3() };
	long rc = HYPERVISOR_hvm_op(HVMOP_pagetable_dying, &pd);
	XEN_CHECK(rc == -XEN_ENOSYS || rc == -XEN_EINVAL, "pagetable_dying = %ld\n", rc);
	printf("xen_hvm_params: pagetable_dying = %ld (%s) ok\n", rc, xen_strerror(rc));

	XEN_EXPECT("hvm_op 99 (unknown)", HYPERVISOR_hvm_op(99, NULL), -XEN_ENOSYS);
	xen_pass();
}
