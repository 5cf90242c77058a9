/*
 * xen_evtchn_ops: every EVTCHNOP_* of the 2-level ABI on one vCPU
 * (xen/common/event_channel.c, xen/common/event_2l.c).  Deliveries go
 * through the per-vCPU upcall vector; the checks count callbacks per port.
 *
 * Semantics encoded (event_channel.c unless noted):
 *  - alloc_unbound(remote DOMID_SELF) records our own domid as the remote;
 *  - bind_interdomain to our own unbound port makes a loopback pair and
 *    *always* sets the new local port pending ("We may have lost
 *    notifications on the remote unbound port");
 *  - send on one end raises the other end; on IPI ports it raises the port
 *    itself; on an unbound port it is silently dropped (0); otherwise -EINVAL;
 *  - close of one end leaves the peer unbound (remote = us); a closed port
 *    reads EVTCHNSTAT_closed and cannot be closed again (-EINVAL);
 *  - per-vCPU VIRQs: once per vCPU (-EEXIST), not re-bindable (bind_vcpu
 *    -EINVAL); global VIRQs only on vCPU 0 (-EINVAL); IPIs not re-bindable;
 *  - event_2l.c: a masked port gets pending but no upcall; EVTCHNOP_unmask
 *    re-raises it only if the port was masked and is pending;
 *  - reset closes everything, and port allocation restarts at 1 (port 0 is
 *    reserved, get_free_port scans upwards);
 *  - the FIFO ops from a 2-level domain (event_fifo.c): expand_array before
 *    init_control -> -EOPNOTSUPP; set_priority -> -ENOSYS (2-level has no
 *    priorities; an invalid port is -EINVAL first); a failed init_control
 *    (vCPU out of range -ENOENT, misaligned offset or a gfn that isn't RAM
 *    -EINVAL) leaves the domain 2-level.  xen_fifo switches to FIFO.
 */
#include "xen.h"

#define WAIT_MS 500
static uint32_t self_domid;
static uint32_t snap[XEN_KIT_MAX_PORTS];

static void st_check(evtchn_port_t p, uint32_t status, uint32_t vcpu, const char *what)
{
	struct evtchn_status st;
	long rc = xen_evtchn_status(p, &st);
	if (rc || st.status != status || st.vcpu != vcpu)
		kit_fail("xen_evtchn_ops: status(%u) [%s] = %ld status %u vcpu %u, want 0 %u %u",
			 p, what, rc, st.status, st.vcpu, status, vcpu);
	printf("xen_evtchn_ops: status(%u) = %u (%s) vcpu %u ok\n", p, st.status, what, st.vcpu);
}

static bool delivered(evtchn_port_t p, uint32_t before)
{
	return XEN_WAIT_UNTIL(xen_evtchn_count[p] > before, xen_now() + XEN_MS(WAIT_MS));
}

static void quiet(evtchn_port_t p, uint32_t before, const char *what)
{
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(10));
	if (xen_evtchn_count[p] != before)
		kit_fail("xen_evtchn_ops: %s: port %u delivered (%u -> %u)", what, p, before, xen_evtchn_count[p]);
}

void kit_main(void)
{
	printf("xen_evtchn_ops: EVTCHNOP_* on the 2-level ABI, loopback interdomain\n");
	xen_test_start("xen_evtchn_ops");
	xen_use_upcall_vector();
	struct evtchn_status st;
	uint32_t n;

	/* alloc_unbound + loopback bind_interdomain */
	evtchn_port_t a, b;
	XEN_EXPECT("alloc_unbound(self, remote self)", xen_evtchn_alloc_unbound(DOMID_SELF, &a), 0);
	XEN_CHECK(a != 0 && a < EVTCHN_2L_NR_CHANNELS, "port %u\n", a);
	XEN_EXPECT("status(unbound)", xen_evtchn_status(a, &st), 0);
	XEN_EXPECT("status(unbound).status", st.status, EVTCHNSTAT_unbound);
	self_domid = st.u.unbound.dom;
	XEN_CHECK(self_domid < DOMID_FIRST_RESERVED, "unbound.dom %#x is not a real domid\n", self_domid);
	if (xen_info.domid != ~0u)
		XEN_EXPECT("unbound.dom == CPUID domid", self_domid, xen_info.domid);
	printf("xen_evtchn_ops: our domid is %u\n", self_domid);

	cli();
	XEN_EXPECT("bind_interdomain(self, a)", xen_evtchn_bind_interdomain(DOMID_SELF, a, &b), 0);
	XEN_CHECK(b != a && b != 0, "local port %u\n", b);
	XEN_CHECK(xen_evtchn_pending(b), "bind_interdomain did not set the new local port pending\n");
	XEN_CHECK(delivered(b, 0), "no upcall for the bind's notification\n");
	printf("xen_evtchn_ops: bind_interdomain set port %u pending and it was delivered ok\n", b);
	XEN_EXPECT("status(a).status", xen_evtchn_status(a, &st) ?: st.status, EVTCHNSTAT_interdomain);
	XEN_CHECK(st.u.interdomain.dom == self_domid && st.u.interdomain.port == b,
		  "a's peer %u:%u\n", st.u.interdomain.dom, st.u.interdomain.port);
	XEN_EXPECT("status(b).status", xen_evtchn_status(b, &st) ?: st.status, EVTCHNSTAT_interdomain);
	XEN_CHECK(st.u.interdomain.dom == self_domid && st.u.interdomain.port == a,
		  "b's peer %u:%u\n", st.u.interdomain.dom, st.u.interdomain.port);
	printf("xen_evtchn_ops: loopback pair %u <-> %u ok\n", a, b);

	/* send in both directions */
	n = xen_evtchn_count[a];
	XEN_EXPECT("send(b)", xen_evtchn_send(b), 0);
	XEN_CHECK(delivered(a, n), "send(b) did not raise a\n");
	n = xen_evtchn_count[b];
	XEN_EXPECT("send(a)", xen_evtchn_send(a), 0);
	XEN_CHECK(delivered(b, n), "send(a) did not raise b\n");
	printf("xen_evtchn_ops: send raises the peer in both directions ok\n");

	/* close one end: the peer becomes unbound (remote = us); sending on it is dropped. */
	XEN_EXPECT("close(a)", xen_evtchn_close(a), 0);
	st_check(a, EVTCHNSTAT_closed, 0, "closed");
	XEN_EXPECT("status(b) after close(a)", xen_evtchn_status(b, &st), 0);
	XEN_CHECK(st.status == EVTCHNSTAT_unbound && st.u.unbound.dom == self_domid,
		  "b: status %u dom %u\n", st.status, st.u.unbound.dom);
	n = xen_evtchn_count[b];
	XEN_EXPECT("send(b) unbound (dropped)", xen_evtchn_send(b), 0);
	quiet(b, n, "send on an unbound port");
	XEN_EXPECT("close(a) again", xen_evtchn_close(a), -XEN_EINVAL);
	XEN_EXPECT("send(a) closed", xen_evtchn_send(a), -XEN_EINVAL);
	XEN_EXPECT("close(0) reserved", xen_evtchn_close(0), -XEN_EINVAL);
	/* Port 0 exists (port_is_valid) but is never bound: status says closed, unmask is allowed. */
	XEN_EXPECT("status(0) reserved", xen_evtchn_status(0, &st) ?: st.status, EVTCHNSTAT_closed);
	XEN_EXPECT("unmask(0) reserved", xen_evtchn_unmask(0), 0);
	/* b is unbound and accepts us again */
	evtchn_port_t c;
	cli();
	memcpy(snap, (const void *)xen_evtchn_count, sizeof(snap));	/* c may reuse a's number */
	XEN_EXPECT("bind_interdomain(self, b) again", xen_evtchn_bind_interdomain(DOMID_SELF, b, &c), 0);
	XEN_CHECK(delivered(c, snap[c]), "no notification for the rebound port %u\n", c);
	XEN_EXPECT("bind_interdomain(self, b) while bound", xen_evtchn_bind_interdomain(DOMID_SELF, b, NULL), -XEN_EINVAL);
	XEN_EXPECT("bind_interdomain(domid 0x1234)", xen_evtchn_bind_interdomain(0x1234, b, NULL), -XEN_ESRCH);
	XEN_EXPECT("bind_interdomain(self, port 5000)", xen_evtchn_bind_interdomain(DOMID_SELF, 5000, NULL), -XEN_EINVAL);
	struct evtchn_alloc_unbound au = { .dom = 0x1234, .remote_dom = DOMID_SELF };
	XEN_EXPECT("alloc_unbound(dom 0x1234)", HYPERVISOR_event_channel_op(EVTCHNOP_alloc_unbound, &au), -XEN_ESRCH);
	/* The remote domid is stored, not looked up (a PV frontend names its backend's). */
	au.dom = DOMID_SELF;
	au.remote_dom = 5;
	XEN_EXPECT("alloc_unbound(remote dom 5)", HYPERVISOR_event_channel_op(EVTCHNOP_alloc_unbound, &au), 0);
	XEN_EXPECT("status(it).u.unbound.dom", xen_evtchn_status(au.port, &st) ?: st.u.unbound.dom, 5);
	XEN_EXPECT("close(it)", xen_evtchn_close(au.port), 0);

	/* VIRQs */
	evtchn_port_t vt, vd;
	XEN_EXPECT("bind_virq(TIMER, vcpu 0)", xen_evtchn_bind_virq(VIRQ_TIMER, 0, &vt), 0);
	XEN_EXPECT("status(virq).status", xen_evtchn_status(vt, &st) ?: st.status, EVTCHNSTAT_virq);
	XEN_CHECK(st.u.virq == VIRQ_TIMER && st.vcpu == 0, "virq %u vcpu %u\n", st.u.virq, st.vcpu);
	XEN_EXPECT("bind_virq(TIMER, vcpu 0) again", xen_evtchn_bind_virq(VIRQ_TIMER, 0, NULL), -XEN_EEXIST);
	XEN_EXPECT("bind_virq(DEBUG, vcpu 0)", xen_evtchn_bind_virq(VIRQ_DEBUG, 0, &vd), 0);
	XEN_EXPECT("bind_virq(24 = NR_VIRQS)", xen_evtchn_bind_virq(NR_VIRQS, 0, NULL), -XEN_EINVAL);
	XEN_EXPECT("bind_virq(CONSOLE (global), vcpu 1)", xen_evtchn_bind_virq(VIRQ_CONSOLE, 1, NULL), -XEN_EINVAL);
	XEN_EXPECT("bind_virq(DEBUG, vcpu 5)", xen_evtchn_bind_virq(VIRQ_DEBUG, 5, NULL), -XEN_ENOENT);
	XEN_EXPECT("send(virq port)", xen_evtchn_send(vt), -XEN_EINVAL);
	XEN_EXPECT("bind_vcpu(per-vCPU virq, 0)", xen_evtchn_bind_vcpu(vt, 0), -XEN_EINVAL);
	n = xen_evtchn_count[vt];
	XEN_EXPECT("stop_periodic_timer", HYPERVISOR_vcpu_op(VCPUOP_stop_periodic_timer, 0, NULL), 0);
	XEN_EXPECT("set_singleshot_timer(+1 ms)", xen_set_singleshot(xen_now() + XEN_MS(1), 0), 0);
	XEN_CHECK(delivered(vt, n), "VIRQ_TIMER not delivered\n");
	printf("xen_evtchn_ops: VIRQ_TIMER fired on port %u ok\n", vt);

	/* IPI */
	evtchn_port_t ip;
	XEN_EXPECT("bind_ipi(vcpu 0)", xen_evtchn_bind_ipi(0, &ip), 0);
	st_check(ip, EVTCHNSTAT_ipi, 0, "ipi");
	n = xen_evtchn_count[ip];
	XEN_EXPECT("send(ipi)", xen_evtchn_send(ip), 0);
	XEN_CHECK(delivered(ip, n), "IPI not delivered\n");
	XEN_EXPECT("bind_ipi(vcpu 7)", xen_evtchn_bind_ipi(7, NULL), -XEN_ENOENT);
	XEN_EXPECT("bind_vcpu(ipi, 0)", xen_evtchn_bind_vcpu(ip, 0), -XEN_EINVAL);
	XEN_EXPECT("bind_vcpu(interdomain, 0)", xen_evtchn_bind_vcpu(b, 0), 0);
	XEN_EXPECT("bind_vcpu(interdomain, vcpu 9)", xen_evtchn_bind_vcpu(b, 9), -XEN_ENOENT);
	XEN_EXPECT("bind_vcpu(port 5000, 0)", xen_evtchn_bind_vcpu(5000, 0), -XEN_EINVAL);

	/* Masked: pending but no upcall; EVTCHNOP_unmask re-raises. */
	xen_evtchn_mask(ip);
	n = xen_evtchn_count[ip];
	XEN_EXPECT("send(ipi, masked)", xen_evtchn_send(ip), 0);
	quiet(ip, n, "masked port");
	XEN_CHECK(xen_evtchn_pending(ip), "masked port not pending\n");
	XEN_EXPECT("unmask(ipi)", xen_evtchn_unmask(ip), 0);
	XEN_CHECK(!xen_evtchn_masked(ip), "unmask left the mask bit set\n");
	XEN_CHECK(delivered(ip, n), "unmask did not re-raise the pending port\n");
	printf("xen_evtchn_ops: masked send held back, EVTCHNOP_unmask delivered it ok\n");
	/* Mask, send, clear the mask bit ourselves: the edge is lost; unmask of an
	 * unmasked port does nothing (event_2l.c test_and_clear_bit(mask)). */
	xen_evtchn_mask(ip);
	n = xen_evtchn_count[ip];
	XEN_EXPECT("send(ipi, masked)", xen_evtchn_send(ip), 0);
	xen_evtchn_clear_mask_bit(ip);
	XEN_EXPECT("unmask(ipi, not masked)", xen_evtchn_unmask(ip), 0);
	quiet(ip, n, "unmask of an unmasked port");
	XEN_CHECK(xen_evtchn_pending(ip), "pending bit lost\n");
	printf("xen_evtchn_ops: unmask of an already-unmasked pending port raises nothing ok\n");
	xen_evtchn_clear_pending(ip);
	XEN_EXPECT("unmask(port 5000)", xen_evtchn_unmask(5000), -XEN_EINVAL);

	/* status errors */
	XEN_EXPECT("status(port 5000)", xen_evtchn_status(5000, &st), -XEN_EINVAL);
	st.dom = 0x1234;
	st.port = ip;
	XEN_EXPECT("status(domid 0x1234)", HYPERVISOR_event_channel_op(EVTCHNOP_status, &st), -XEN_ESRCH);

	/* FIFO ops from a 2-level domain; failed init_controls leave it 2-level.  With
	 * `fifo=off` (the VMM runs with --xen-fifo off) the ABI is not offered at all:
	 * every FIFO op is -ENOSYS, as from a Xen before 4.4 (and QEMU), and Linux stays
	 * 2-level (drivers/xen/events/events_base.c xen_init_IRQ). */
	struct evtchn_expand_array ea = { .array_gfn = (uintptr_t)xen_scratch_page(1) >> 12 };
	struct evtchn_set_priority sp = { .port = ip, .priority = 3 };
	struct evtchn_init_control ic = { .control_gfn = (uintptr_t)xen_scratch_page(0) >> 12, .vcpu = 99 };
	if (kit_cmdline_has("fifo=off")) {
		XEN_EXPECT("expand_array (FIFO not offered)", HYPERVISOR_event_channel_op(EVTCHNOP_expand_array, &ea),
			   -XEN_ENOSYS);
		XEN_EXPECT("set_priority (FIFO not offered)", HYPERVISOR_event_channel_op(EVTCHNOP_set_priority, &sp),
			   -XEN_ENOSYS);
		ic.vcpu = 0;
		XEN_EXPECT("init_control (FIFO not offered)", HYPERVISOR_event_channel_op(EVTCHNOP_init_control, &ic),
			   -XEN_ENOSYS);
	} else {
		XEN_EXPECT("expand_array before init_control", HYPERVISOR_event_channel_op(EVTCHNOP_expand_array, &ea),
			   -XEN_EOPNOTSUPP);
		XEN_EXPECT("set_priority (2-level)", HYPERVISOR_event_channel_op(EVTCHNOP_set_priority, &sp), -XEN_ENOSYS);
		sp.port = 5000;
		XEN_EXPECT("set_priority(port 5000)", HYPERVISOR_event_channel_op(EVTCHNOP_set_priority, &sp), -XEN_EINVAL);
		XEN_EXPECT("init_control(vcpu 99)", HYPERVISOR_event_channel_op(EVTCHNOP_init_control, &ic), -XEN_ENOENT);
		ic.vcpu = 0;
		ic.offset = 4;
		XEN_EXPECT("init_control(offset 4)", HYPERVISOR_event_channel_op(EVTCHNOP_init_control, &ic), -XEN_EINVAL);
		ic.offset = 0;
		ic.control_gfn = 1ull << 40;
		XEN_EXPECT("init_control(gfn not RAM)", HYPERVISOR_event_channel_op(EVTCHNOP_init_control, &ic), -XEN_EINVAL);
		XEN_EXPECT("expand_array after a failed init_control", HYPERVISOR_event_channel_op(EVTCHNOP_expand_array, &ea),
			   -XEN_EOPNOTSUPP);
	}
	XEN_EXPECT("event_channel_op 99 (unknown)", HYPERVISOR_event_channel_op(99, &sp), -XEN_ENOSYS);

	/* reset: everything closed, allocation restarts at port 1. */
	struct evtchn_reset rs = { .dom = 0x1234 };
	XEN_EXPECT("reset(domid 0x1234)", HYPERVISOR_event_channel_op(EVTCHNOP_reset, &rs), -XEN_ESRCH);
	rs.dom = DOMID_SELF;
	XEN_EXPECT("reset(self)", HYPERVISOR_event_channel_op(EVTCHNOP_reset, &rs), 0);
	const evtchn_port_t all[] = { b, c, vt, vd, ip };
	for (unsigned i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		XEN_EXPECT("status after reset", xen_evtchn_status(all[i], &st), 0);
		XEN_CHECK(st.status == EVTCHNSTAT_closed, "port %u status %u after reset\n", all[i], st.status);
	}
	printf("xen_evtchn_ops: reset closed ports %u %u %u %u %u ok\n", b, c, vt, vd, ip);
	evtchn_port_t first;
	XEN_EXPECT("alloc_unbound after reset", xen_evtchn_alloc_unbound(DOMID_SELF, &first), 0);
	XEN_EXPECT("first port after reset", first, 1);
	XEN_EXPECT("bind_virq(TIMER, 0) after reset", xen_evtchn_bind_virq(VIRQ_TIMER, 0, &vt), 0);
	XEN_EXPECT("next port", vt, 2);
	xen_pass();
}
