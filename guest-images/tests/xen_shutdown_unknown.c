/*
 * xen_shutdown_unknown: SCHEDOP_shutdown(suspend) is refused (-EOPNOTSUPP: this
 * VMM can't save a domain yet), then SCHEDOP_shutdown with reason 0x177 (an
 * unknown reason, truncated to u8 0x77 as domain_shutdown(d, (u8)reason) does)
 * shuts the domain down, which xl answers by destroying it: the VMM's failure
 * exit code 82.  If the hypercall returns, the guest fails with exit 1.
 */
#include "xen.h"

void kit_main(void)
{
	printf("xen_shutdown_unknown: SCHEDOP_shutdown(suspend) refused, then reason 0x177, expect exit 82\n");
	xen_test_name = "xen_shutdown_unknown";
	xen_init();
	struct sched_shutdown sd = { .reason = SHUTDOWN_suspend };
	XEN_EXPECT("SCHEDOP_shutdown(suspend)", HYPERVISOR_sched_op(SCHEDOP_shutdown, &sd), -XEN_EOPNOTSUPP);
	sd.reason = 0x177;
	long rc = HYPERVISOR_sched_op(SCHEDOP_shutdown, &sd);
	kit_fail("SCHEDOP_shutdown(0x177) returned %ld", rc);
}
