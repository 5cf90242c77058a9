/*
 * xen_shutdown_poweroff: SCHEDOP_shutdown(SHUTDOWN_poweroff) ends the VM
 * with exit code 0 (xen/common/sched/core.c do_sched_op -> domain_shutdown).
 * If the hypercall returns, the guest fails with exit 1.
 */
#include "xen.h"

void kit_main(void)
{
	printf("xen_shutdown_poweroff: SCHEDOP_shutdown(poweroff), expect exit 0\n");
	xen_test_name = "xen_shutdown_poweroff";
	xen_init();
	struct sched_shutdown sd = { .reason = SHUTDOWN_poweroff };
	long rc = HYPERVISOR_sched_op(SCHEDOP_shutdown, &sd);
	kit_fail("SCHEDOP_shutdown(poweroff) returned %ld", rc);
}
