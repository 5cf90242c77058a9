/*
 * xen_vcpu_down_last: VCPUOP_down on the only running vCPU powers the domain
 * off (xen/common/domain.c common_vcpu_op: "Last vcpu going down?" ->
 * domain_shutdown(d, SHUTDOWN_poweroff)), so the VM ends with exit code 0.
 * If the hypercall returns, or the vCPU just stops, the guest fails (exit 1 or
 * the VMM's timeout).
 */
#include "xen.h"

void kit_main(void)
{
	printf("xen_vcpu_down_last: VCPUOP_down(0) with one vCPU, expect exit 0\n");
	xen_test_name = "xen_vcpu_down_last";
	xen_init();
	long rc = HYPERVISOR_vcpu_op(VCPUOP_down, 0, NULL);
	kit_fail("VCPUOP_down(0) returned %ld", rc);
}
