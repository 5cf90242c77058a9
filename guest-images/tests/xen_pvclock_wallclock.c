/*
 * xen_pvclock_wallclock: vcpu_info.time (pvclock) and the shared_info
 * wallclock (public/xen.h struct vcpu_time_info, shared_info wc_*;
 * Linux arch/x86/xen/time.c, arch/x86/kernel/pvclock.c).
 *  - version even, tsc_to_system_mul non-zero, a TSC frequency that makes
 *    sense (and agrees with CPUID base+3 sub-leaf 0 ECX when given);
 *  - system time never goes backwards, and advances like an independent
 *    clock: the LAPIC timer (1 GHz / divide on KVM) over a 20 ms one-shot;
 *  - wallclock (wc_sec_hi:wc_sec . wc_nsec, the time at system time 0) plus
 *    system time is within [-2 s, +60 s] of cmdline "wallclock=<unix
 *    seconds>" taken when the VMM was started (else: after 2020-01-01).
 */
#include "xen.h"

static volatile int lapic_fired;
static void lapic_isr(struct kit_frame *f) { (void)f; lapic_fired = 1; lapic_eoi(); }

void kit_main(void)
{
	printf("xen_pvclock_wallclock: pvclock and wallclock from shared_info\n");
	xen_test_start("xen_pvclock_wallclock");
	volatile struct vcpu_time_info *t = &xen_vcpu_info()->time;

	uint32_t ver = t->version, mul = t->tsc_to_system_mul;
	int8_t shift = t->tsc_shift;
	printf("xen_pvclock_wallclock: version %u mul %u shift %d flags %#x system_time %lu tsc %lu\n",
	       ver, mul, shift, t->flags, t->system_time, t->tsc_timestamp);
	XEN_CHECK(!(ver & 1), "pvclock version %u is odd\n", ver);
	XEN_CHECK(mul != 0, "tsc_to_system_mul is 0\n");
	XEN_CHECK(shift >= -8 && shift <= 8, "tsc_shift %d\n", shift);
	uint64_t hz = xen_tsc_hz();
	XEN_CHECK(hz >= 100000000ULL && hz <= 20000000000ULL, "TSC %lu Hz\n", hz);
	printf("xen_pvclock_wallclock: TSC %lu kHz from mul/shift ok\n", hz / 1000);
	struct cpuid l3 = cpuid(xen_info.base + 3, 0);
	if (l3.c) {
		uint64_t khz = l3.c, ours = hz / 1000;
		XEN_CHECK(khz * 100 > ours * 99 && khz * 100 < ours * 101, "CPUID base+3 says %lu kHz, pvclock %lu\n",
			  khz, ours);
		printf("xen_pvclock_wallclock: CPUID base+3.0 ECX %lu kHz agrees ok\n", khz);
	}

	/* Monotonic across many reads (and across the hypervisor's updates). */
	uint64_t prev = xen_now(), first = prev;
	for (int i = 0; i < 200; i++) {
		uint64_t now = xen_now();
		XEN_CHECK(now >= prev, "pvclock went backwards: %lu -> %lu\n", prev, now);
		prev = now;
		if (i % 50 == 49)
			XEN_WAIT_UNTIL(false, now + XEN_MS(2));
	}
	printf("xen_pvclock_wallclock: 200 reads over %lu us monotonic ok\n", (prev - first) / 1000);

	/* Against the LAPIC timer: 20,000,000 ticks at divide 1 = 20 ms. */
	kit_set_handler(0xe1, lapic_isr);
	cli();
	uint64_t tsc0 = rdtsc(), t0 = xen_now();
	lapic_timer_oneshot(0xe1, 1, 20000000);
	while (!lapic_fired) {
		safe_halt();
		cli();
	}
	uint64_t t1 = xen_now(), tsc1 = rdtsc();
	sti();
	uint64_t d = t1 - t0, dt = xen_pvclock_scale(tsc1 - tsc0, mul, shift);
	printf("xen_pvclock_wallclock: 20 ms LAPIC one-shot = %lu us of pvclock, %lu us of TSC\n", d / 1000, dt / 1000);
	XEN_CHECK(d >= XEN_MS(19) && d <= XEN_MS(100), "pvclock measured %lu us for 20 ms\n", d / 1000);
	XEN_CHECK(d + XEN_MS(1) > dt && dt + XEN_MS(1) > d, "pvclock %lu vs TSC-scaled %lu\n", d, dt);

	/* Wallclock */
	uint64_t sec;
	uint32_t nsec;
	volatile struct shared_info *s = xen_shared_info;
	XEN_CHECK(!(s->wc_version & 1), "wc_version %u odd\n", s->wc_version);
	xen_wallclock(&sec, &nsec);
	XEN_CHECK(nsec < 1000000000u, "wc_nsec %u\n", nsec);
	uint64_t now_sec = sec + (nsec + xen_now()) / 1000000000ULL;
	printf("xen_pvclock_wallclock: boot wallclock %lu.%09u, now %lu (unix seconds)\n", sec, nsec, now_sec);
	uint64_t ref = xen_cmdline_u64("wallclock", 0);
	if (ref) {
		XEN_CHECK(now_sec + 2 >= ref && now_sec <= ref + 60, "now %lu vs cmdline wallclock %lu\n",
			  now_sec, ref);
		printf("xen_pvclock_wallclock: wallclock within [-2 s, +60 s] of wallclock=%lu ok\n", ref);
	} else {
		XEN_CHECK(now_sec > 1577836800ULL, "wallclock %lu is before 2020\n", now_sec);
		printf("xen_pvclock_wallclock: wallclock after 2020-01-01 ok (no wallclock= given)\n");
	}
	xen_pass();
}
