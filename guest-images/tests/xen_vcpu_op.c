/*
 * xen_vcpu_op: __HYPERVISOR_vcpu_op registrations and state queries, plus
 * vm_assist (xen/common/domain.c do_vcpu_op, map_vcpu_info, vm_assist;
 * xen/arch/x86/domain.c arch_do_vcpu_op; xen/arch/x86/include/asm/domain.h
 * HVM_VM_ASSIST_MASK).  Timers are in xen_timer.
 */
#include "xen.h"

static struct vcpu_runstate_info rs __attribute__((aligned(64)));
static struct vcpu_time_info ti __attribute__((aligned(64)));

static uint64_t runstate_sum(const volatile struct vcpu_runstate_info *r)
{
	return r->time[0] + r->time[1] + r->time[2] + r->time[3];
}

void kit_main(void)
{
	printf("xen_vcpu_op: runstate, vcpu_time and vcpu_info registration, is_up, vm_assist\n");
	xen_test_start("xen_vcpu_op");
	uint64_t now = xen_now();

	/* get_runstate_info / register_runstate_memory_area: written at once. */
	struct vcpu_runstate_info r0;
	memset(&r0, 0xff, sizeof(r0));
	XEN_EXPECT("get_runstate_info(0)", HYPERVISOR_vcpu_op(VCPUOP_get_runstate_info, 0, &r0), 0);
	XEN_EXPECT("runstate.state", r0.state, RUNSTATE_running);
	memset(&rs, 0xff, sizeof(rs));
	struct vcpu_register_runstate_memory_area ra = { .addr = (uintptr_t)&rs };
	XEN_EXPECT("register_runstate_memory_area(0)",
		   HYPERVISOR_vcpu_op(VCPUOP_register_runstate_memory_area, 0, &ra), 0);
	volatile struct vcpu_runstate_info *vr = &rs;
	XEN_EXPECT("registered runstate.state", vr->state, RUNSTATE_running);
	uint64_t entry0 = vr->state_entry_time & ~XEN_RUNSTATE_UPDATE;
	XEN_CHECK(entry0 <= xen_now(), "state_entry_time %lu in the future (now %lu)\n", entry0, xen_now());
	uint64_t blocked0 = vr->time[RUNSTATE_blocked];
	printf("xen_vcpu_op: runstate entry %lu ns, running %lu blocked %lu ok\n", entry0,
	       vr->time[RUNSTATE_running], blocked0);

	/* vm_assist: only runstate_update_flag is valid for HVM. */
	XEN_EXPECT("vm_assist(enable, runstate_update_flag)",
		   HYPERVISOR_vm_assist(VMASST_CMD_enable, VMASST_TYPE_runstate_update_flag), 0);
	XEN_EXPECT("vm_assist(enable, writable_pagetables)",
		   HYPERVISOR_vm_assist(VMASST_CMD_enable, VMASST_TYPE_writable_pagetables), -XEN_EINVAL);
	XEN_EXPECT("vm_assist(cmd 7, runstate_update_flag)",
		   HYPERVISOR_vm_assist(7, VMASST_TYPE_runstate_update_flag), -XEN_ENOSYS);
	XEN_EXPECT("vm_assist(enable, type 64)", HYPERVISOR_vm_assist(VMASST_CMD_enable, 64), -XEN_EINVAL);

	/* Block ~20 ms in SCHEDOP_poll (an unbound port never fires): the blocked time grows. */
	evtchn_port_t idle;
	XEN_EXPECT("alloc_unbound (idle port)", xen_evtchn_alloc_unbound(DOMID_SELF, &idle), 0);
	uint64_t t0 = xen_now();
	struct sched_poll poll = { .ports = (uintptr_t)&idle, .nr_ports = 1, .timeout = t0 + XEN_MS(20) };
	XEN_EXPECT("poll(idle port, 20 ms)", HYPERVISOR_sched_op(SCHEDOP_poll, &poll), 0);
	uint64_t slept = xen_now() - t0;
	XEN_CHECK(slept >= XEN_MS(20), "poll returned after %lu ns\n", slept);
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(2));	/* let the area be refreshed */
	XEN_EXPECT("runstate.state after blocking", vr->state, RUNSTATE_running);
	XEN_CHECK(!(vr->state_entry_time & XEN_RUNSTATE_UPDATE), "XEN_RUNSTATE_UPDATE left set\n");
	uint64_t dblocked = vr->time[RUNSTATE_blocked] - blocked0;
	XEN_CHECK(dblocked >= XEN_MS(10), "time[blocked] grew by %lu ns over a %lu ns poll\n", dblocked, slept);
	XEN_CHECK((vr->state_entry_time & ~XEN_RUNSTATE_UPDATE) > entry0, "state_entry_time did not move\n");
	XEN_CHECK(runstate_sum(vr) <= xen_now(), "runstate times exceed system time\n");
	printf("xen_vcpu_op: a %lu us poll added %lu us of blocked time ok\n", slept / 1000, dblocked / 1000);

	/* register_vcpu_time_memory_area: a second copy of vcpu_info.time, written at once. */
	memset(&ti, 0, sizeof(ti));
	struct vcpu_register_time_memory_area ta = { .addr = (uintptr_t)&ti };
	XEN_EXPECT("register_vcpu_time_memory_area(0)",
		   HYPERVISOR_vcpu_op(VCPUOP_register_vcpu_time_memory_area, 0, &ta), 0);
	volatile struct vcpu_time_info *vt = &ti;
	XEN_CHECK(vt->tsc_to_system_mul != 0 && !(vt->version & 1), "time area: version %u mul %u\n",
		  vt->version, vt->tsc_to_system_mul);
	XEN_CHECK(vt->tsc_to_system_mul == xen_vcpu_info()->time.tsc_to_system_mul &&
		  vt->tsc_shift == xen_vcpu_info()->time.tsc_shift, "time area scale differs from vcpu_info\n");
	uint64_t a = xen_pvclock_read(vt), b = xen_now();
	XEN_CHECK(a + XEN_MS(1) > b && b + XEN_MS(1) > a, "time area %lu vs vcpu_info %lu\n", a, b);
	printf("xen_vcpu_op: vcpu_time area agrees with vcpu_info.time ok\n");

	/* register_vcpu_info: argument checks first, then a move out of shared_info. */
	uint8_t *page = xen_scratch_page(0);
	struct vcpu_register_vcpu_info vi = { .mfn = (uintptr_t)page >> 12, .offset = 4096 - 32 };
	XEN_EXPECT("register_vcpu_info(offset 4064)", HYPERVISOR_vcpu_op(VCPUOP_register_vcpu_info, 0, &vi), -XEN_EINVAL);
	vi.offset = 132;		/* not 8-aligned: the event bits would be split atomics */
	XEN_EXPECT("register_vcpu_info(offset 132)", HYPERVISOR_vcpu_op(VCPUOP_register_vcpu_info, 0, &vi), -XEN_EINVAL);
	vi.offset = 128;
	XEN_EXPECT("register_vcpu_info(vcpu 1)", HYPERVISOR_vcpu_op(VCPUOP_register_vcpu_info, 1, &vi), -XEN_ENOENT);
	vi.mfn = xen_unbacked_paddr() >> 12;
	XEN_EXPECT("register_vcpu_info(gfn not RAM)", HYPERVISOR_vcpu_op(VCPUOP_register_vcpu_info, 0, &vi), -XEN_EINVAL);
	/* The window is the hypercall alone: every printed byte costs two exits (LSR, THR),
	 * which in the nested host added ~400 ms of console output to it. */
	uint64_t before = xen_now();
	long rc = xen_register_vcpu_info(page, 128);
	uint64_t after = xen_now();
	XEN_EXPECT("register_vcpu_info(0, page+128)", rc, 0);
	volatile struct vcpu_info *nv = (volatile struct vcpu_info *)(page + 128);
	XEN_CHECK(xen_vcpu_info() == (struct vcpu_info *)nv, "kit did not switch vcpu_info\n");
	/* map_vcpu_info(): copies the old vcpu_info, then marks every selector bit pending. */
	XEN_CHECK(nv->evtchn_pending_sel == ~0ULL && nv->evtchn_upcall_pending == 1,
		  "new vcpu_info: sel %#lx upcall_pending %u, want ~0 and 1\n",
		  nv->evtchn_pending_sel, nv->evtchn_upcall_pending);
	printf("xen_vcpu_op: new vcpu_info has evtchn_pending_sel ~0 and upcall_pending 1 ok\n");
	XEN_CHECK(nv->time.tsc_to_system_mul != 0, "new vcpu_info has no time\n");
	/* Continuous: no step back, and forward only by the hypercall's own duration
	 * (slack_ms: how slow the VMM may be where it runs; 100 ms unless told). */
	XEN_CHECK(after >= before && after - before < XEN_MS(xen_cmdline_u64("slack_ms", 100)),
		  "time from the new vcpu_info: %lu -> %lu\n",
		  before, after);
	printf("xen_vcpu_op: pvclock continues in the registered vcpu_info ok\n");
	vi.mfn = (uintptr_t)page >> 12;
	vi.offset = 256;
	XEN_EXPECT("register_vcpu_info again", HYPERVISOR_vcpu_op(VCPUOP_register_vcpu_info, 0, &vi), -XEN_EINVAL);
	nv->evtchn_upcall_pending = 0;
	nv->evtchn_pending_sel = 0;

	/* is_up / up */
	XEN_EXPECT("is_up(0)", HYPERVISOR_vcpu_op(VCPUOP_is_up, 0, NULL), 1);
	XEN_EXPECT("is_up(1) with one vCPU", HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, NULL), -XEN_ENOENT);
	XEN_EXPECT("up(0) (already up)", HYPERVISOR_vcpu_op(VCPUOP_up, 0, NULL), 0);
	XEN_EXPECT("vcpu_op 99 (unknown)", HYPERVISOR_vcpu_op(99, 0, NULL), -XEN_ENOSYS);
	XEN_EXPECT("vm_assist(disable, runstate_update_flag)",
		   HYPERVISOR_vm_assist(VMASST_CMD_disable, VMASST_TYPE_runstate_update_flag), 0);
	(void)now;
	xen_pass();
}
