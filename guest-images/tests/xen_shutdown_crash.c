/*
 * xen_shutdown_crash: SCHEDOP_shutdown(SHUTDOWN_crash) ends the VM with the
 * VMM's crash exit code 82 (xen/common/sched/core.c do_sched_op ->
 * domain_shutdown).  If the hypercall returns, the guest fails with exit 1.
 */
#include "xen.h"

void kit_main(void)
{
	printf("xen_shutdown_crash: SCHEDOP_shutdown(crash), expect exit 82\n");
	xen_test_name = "xen_shutdown_crash";
	xen_init();
	struct sched_shutdown sd = { .reason = SHUTDOWN_crash };
	long rc = HYPERVISOR_sched_op(SCHEDOP_shutdown, &sd);
	kit_fail("SCHEDOP_shutdown(crash) returned %ld", rc);
}
