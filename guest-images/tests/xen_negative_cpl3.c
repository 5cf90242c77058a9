/*
 * xen_negative_cpl3: hypercalls from CPL 3 fail with -EPERM and have no
 * effect (xen/arch/x86/hvm/hypercall.c hvm_hypercall: for 16/32/64-bit
 * modes "if ( likely(!hvm_get_cpl(curr)) ) break; ... regs->rax = -EPERM").
 * The kit runs a function in ring 3 (user segments, U pages, IOPL 3 so a
 * port-I/O stub may work) and comes back through a #UD.  If the hypercall
 * page stub itself faults in ring 3 (e.g. `out` with IOPL ignored, as on the
 * PVM host), the guest fails saying so: the transport must reach the
 * hypervisor from ring 3 for this check.
 */
#include "xen.h"

#define NAME "xen_negative_cpl3"

static long user_version(void *arg)
{
	(void)arg;
	return HYPERVISOR_xen_version(XENVER_version, NULL);
}

static long user_evtchn(void *arg)
{
	return HYPERVISOR_event_channel_op(EVTCHNOP_alloc_unbound, arg);
}

static volatile int user_gp;
static volatile uint64_t user_gp_rip;

static void user_fault(struct kit_frame *f)
{
	if ((f->cs & 3) != 3)
		kit_fail(NAME ": #GP in ring 0 at %#lx", f->rip);
	user_gp++;
	user_gp_rip = f->rip;
	xen_user_fault_return(f, -1000);
}

static void cpl3_checks(void)
{
	kit_set_handler(13, user_fault);
	long rc = xen_user_call(user_version, NULL);
	if (rc == -1000) {
		bool in_page = user_gp_rip >= (uintptr_t)xen_hypercall_page &&
			       user_gp_rip < (uintptr_t)xen_hypercall_page + 4096;
		kit_fail(NAME ": hypercall from CPL 3 raised #GP at %#lx%s - the hypercall page stub cannot "
			 "reach the hypervisor from ring 3 (port I/O needs IOPL 3, which this host ignores)",
			 user_gp_rip, in_page ? " (in the hypercall page)" : "");
	}
	XEN_EXPECT("xen_version(XENVER_version) from CPL 3", rc, -XEN_EPERM);
	static struct evtchn_alloc_unbound au;
	au.dom = DOMID_SELF;
	au.remote_dom = DOMID_SELF;
	au.port = 0xdead;
	XEN_EXPECT("alloc_unbound from CPL 3", xen_user_call(user_evtchn, &au), -XEN_EPERM);
	XEN_CHECK(au.port == 0xdead, "CPL 3 call wrote port %u\n", au.port);
	kit_set_handler(13, NULL);
	XEN_EXPECT("xen_version(XENVER_version) from CPL 0 again", HYPERVISOR_xen_version(XENVER_version, NULL),
		   (long)xen_info.version);
}

void kit_main(void)
{
	printf(NAME ": hypercalls from CPL 3 -> -EPERM\n");
	xen_test_start(NAME);
	cpl3_checks();
	xen_pass();
}
