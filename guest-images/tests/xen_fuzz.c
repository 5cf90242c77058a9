/*
 * xen_fuzz: seeded hypercall fuzzing (`--cmdline "seed=N calls=M"`, optional `verbose=1`,
 * `fifo=off` when the VMM runs with --xen-fifo off).
 *
 * Every hypercall family the VMM offers an HVM guest, and the numbers it must refuse, with
 * random, boundary and hostile arguments: NULL, unmapped and non-canonical pointers, MMIO
 * and non-RAM addresses, structs across (non-adjacent) page boundaries and into unmapped
 * pages, huge counts, negative/huge ports, pirqs, GSIs, vCPUs and domids, compat (32-bit)
 * calls and hypercall numbers beyond the page (EAX set by hand, entered at stub+5).  With
 * `--cpus 2` the AP fuzzes at the same time with its own stream, and the BSP takes vCPU 1
 * down and up again now and then.
 *
 * Invariants checked after every call (a failure names the seed, the vCPU, the call number
 * and the arguments, so `seed=N` reproduces it):
 *   - the result is >= 0 or a Xen errno (public/errno.h; EINTR/ERESTART are Xen-internal);
 *   - privileged and absent hypercalls get -EPERM/-ENOSYS (-EACCES/-EFAULT for domctl's
 *     interface check / copy); a struct read through a pointer that cannot be followed gives
 *     -EFAULT for the ops that copy their argument in first;
 *   - 64 sentinel bytes on both sides of every argument buffer stay intact, and the whole
 *     argument arena is intact between calls (no stray writes);
 *   - a canary area never handed to Xen stays unchanged;
 *   - the VM keeps running: both vCPUs reach the end, and PASS prints the call counts.
 *
 * Not fuzzed, because they legitimately end or corrupt this guest: SCHEDOP_shutdown, block
 * (with IF=0 it may sleep for good), poll without a short timeout, VCPUOP_down of the last
 * vCPU (or of the caller), watchdog id 0, multicall with a list; pages given to Xen
 * (shared_info, grant frames, reservation ops) only ever name a scratch area reserved here or
 * gfns that are not RAM; upcall vectors below 0x20 (they would be exceptions).  shared_info
 * is put back at the kit's page right after every successful move.
 *
 * `storm=1` (needs `--pci-testdev`; the soak, bench/fuzz_soak.py, runs with it): a PIRQ storm
 * underneath, see storm_tick().  Optional `storm_us=` (timer period, default 200) and
 * `storm_count=` (messages per burst, default 4096).  Off by default: the storm draws nothing
 * from the fuzzer's PRNG, and without it not one extra call is made, so a seed's calls are the
 * same as before it existed.
 */
#include "xen.h"
#include "pci_testdev.h"

#define NAME "xen_fuzz"
#define PAGE 4096
#define ARENA_PAGES 6			/* three zones of two pages: primary, secondary, third */
#define SENT 64				/* sentinel bytes on each side of a buffer */
#define PAT 0xa5			/* arena fill: 0xa5a5.. is also a gfn no RAM has */
#define NSLOTS 8			/* 4 KiB window slots per CPU */
#define SCRATCH_PAGES 8
#define CONS_SIZE (5 * PAGE)
#define NHC 129				/* per-number counters; [128] = numbers beyond the page */
#define MAX_BUFS 3

struct buf {
	uint8_t *va;
	uint32_t len;			/* bytes Xen may legitimately touch */
	uint32_t mapped;		/* of which mapped (restored after the call) */
	uint8_t chk_before, chk_after;
	uint8_t faults;			/* a pointer Xen cannot follow */
};

struct call {
	unsigned mode;			/* 0 page entry, 1 compat, 2 EAX by hand (stub+5) */
	uint64_t nr;
	uint64_t a[5];
	struct buf b[MAX_BUFS];
	unsigned nb;
	bool want_efault;		/* the primary struct faults and the op copies it in first */
	bool priv;			/* must be -EPERM/-ENOSYS/-EACCES/-EFAULT */
	bool shinfo_moved_if_ok;
	bool shinfo_maybe_moved;	/* batch: errs tell */
};

struct cpu {
	uint64_t s;			/* PRNG state */
	unsigned idx;			/* 0 BSP, 1 AP */
	uint32_t vcpu;
	uint64_t calls, errors;
	uint8_t *arena;
	uint8_t *win;			/* this CPU's window slots */
	evtchn_port_t ports[16];	/* recently returned ports */
	unsigned nports;
	uint64_t seq;			/* call number (for messages) */
};

static uint8_t arena[2][ARENA_PAGES * PAGE] __attribute__((aligned(PAGE)));
static uint8_t xen_written[2][2 * PAGE] __attribute__((aligned(PAGE)));	/* runstate/time areas */
static uint8_t scratch[SCRATCH_PAGES * PAGE] __attribute__((aligned(SCRATCH_PAGES * PAGE)));
static uint8_t canary[2 * PAGE] __attribute__((aligned(PAGE)));
static char cons[CONS_SIZE] __attribute__((aligned(PAGE)));
static uint8_t vinfo_page[2][PAGE] __attribute__((aligned(PAGE)));
static struct cpu cpus[2];
static volatile uint32_t hc_count[NHC];
static uint64_t seed, ncalls, unbacked, unbacked_va;
static unsigned ncpus = 1;
static int verbose;
static volatile int ap_ready, ap_stop, ap_done, ap_fail_code;
static volatile uint64_t ap_progress;
static volatile uint32_t downups;
static volatile int compat_lock;
static uint32_t errno_ok[4];		/* bitmap of Xen errnos, 0..127 */

/* public/errno.h, as xen/abi/errno.py lists it (EINTR 4 and ERESTART 85 never reach a guest). */
static const uint8_t xen_errnos[] = {
	1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20, 21, 22, 23, 24, 28, 30,
	31, 33, 34, 35, 36, 37, 38, 39, 61, 62, 74, 75, 84, 88, 90, 95, 98, 99, 105, 106, 107,
	110, 111,
};

static const char *hc_name(unsigned nr)
{
	static const char *n[] = {
		[__HYPERVISOR_platform_op] = "platform_op", [__HYPERVISOR_memory_op] = "memory_op",
		[__HYPERVISOR_set_timer_op] = "set_timer_op", [__HYPERVISOR_xen_version] = "xen_version",
		[__HYPERVISOR_console_io] = "console_io", [__HYPERVISOR_grant_table_op] = "grant_table_op",
		[__HYPERVISOR_vm_assist] = "vm_assist", [__HYPERVISOR_vcpu_op] = "vcpu_op",
		[__HYPERVISOR_sched_op] = "sched_op", [__HYPERVISOR_event_channel_op] = "event_channel_op",
		[__HYPERVISOR_physdev_op] = "physdev_op", [__HYPERVISOR_hvm_op] = "hvm_op",
		[__HYPERVISOR_sysctl] = "sysctl", [__HYPERVISOR_domctl] = "domctl",
		[__HYPERVISOR_multicall] = "multicall",
	};
	if (nr >= NHC - 1)
		return "beyond_page";
	return nr < sizeof(n) / sizeof(n[0]) && n[nr] ? n[nr] : "other";
}

/* ---- PRNG (splitmix64) and value pickers ------------------------------------------------- */
static uint64_t rnd(struct cpu *c)
{
	uint64_t z = (c->s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}
static uint32_t rn(struct cpu *c, uint32_t n) { return n ? (uint32_t)(rnd(c) % n) : 0; }
static bool chance(struct cpu *c, unsigned pct) { return rn(c, 100) < pct; }

static const uint32_t edge32[] = {
	0, 1, 2, 3, 7, 8, 15, 16, 23, 24, 31, 32, 63, 64, 127, 128, 129, 255, 256, 1023, 1024,
	4095, 4096, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff,
};
static uint32_t pick32(struct cpu *c)
{
	switch (rn(c, 4)) {
	case 0: case 1: return edge32[rn(c, sizeof(edge32) / 4)];
	case 2: return rn(c, 65);
	default: return (uint32_t)rnd(c);
	}
}
static uint64_t pick64(struct cpu *c)
{
	static const uint64_t e[] = { 0, 1, ~0ULL, 1ULL << 63, (1ULL << 63) - 1, 1ULL << 32,
		0xffffffffULL, 1ULL << 47, 1ULL << 52, 0x0000800000000000ULL, 0xffff800000000000ULL };
	switch (rn(c, 3)) {
	case 0: return e[rn(c, sizeof(e) / 8)];
	case 1: return pick32(c);
	default: return rnd(c);
	}
}
static uint16_t pick_domid(struct cpu *c)
{
	static const uint16_t e[] = { 0, 1, 0x1234, 0x7fef, 0x7ff1, 0x7ff2, 0x7ff4, 0x7ff5, 0x7fff, 0xffff };
	unsigned r = rn(c, 10);
	if (r < 6)
		return DOMID_SELF;
	if (r < 7)
		return (uint16_t)xen_info.domid;
	if (r < 9)
		return e[rn(c, sizeof(e) / 2)];
	return (uint16_t)rnd(c);
}
static uint32_t pick_vcpu(struct cpu *c)
{
	static const uint32_t e[] = { 0, 1, 2, 3, 31, 32, 63, 64, 127, 0x7fffffff, 0x80000000, 0xffffffff };
	return chance(c, 30) ? c->vcpu : chance(c, 85) ? e[rn(c, sizeof(e) / 4)] : (uint32_t)rnd(c);
}
static uint32_t pick_port(struct cpu *c)
{
	if (c->nports && chance(c, 40))
		return c->ports[rn(c, c->nports)];
	return chance(c, 40) ? rn(c, 70) : pick32(c);
}
static void remember_port(struct cpu *c, uint32_t p)
{
	if (p >= 4096)
		return;
	if (c->nports < 16)
		c->ports[c->nports++] = p;
	else
		c->ports[rn(c, 16)] = p;
}
static int32_t pick_pirq(struct cpu *c)
{
	static const int32_t e[] = { -1, -2, 0, 1, 15, 16, 23, 24, 47, 48, 255, 256, 1023, 1024, 4095,
		4096, 0x7fffffff, (int32_t)0x80000000 };
	return chance(c, 50) ? (int32_t)rn(c, 64) : chance(c, 80) ? e[rn(c, sizeof(e) / 4)] : (int32_t)rnd(c);
}
/* Vectors an event may be delivered on: every one from 0x20 has our upcall handler,
 * except the kit's wake timer (0xe0) and the spurious vector (0xff). */
static uint8_t pick_vector(struct cpu *c)
{
	uint8_t v;
	do
		v = 0x20 + rn(c, 0xdf);
	while (v == XEN_KIT_WAKE_VECTOR || v == 0xff);
	return v;
}
/* A gfn Xen may be given (placement, reservations): our scratch area or no RAM at all. */
static uint64_t pick_gfn(struct cpu *c)
{
	switch (rn(c, 8)) {
	case 0: case 1: case 2: return ((uintptr_t)scratch >> 12) + rn(c, SCRATCH_PAGES);
	case 3: return (unbacked >> 12) + rn(c, 256);
	case 4: { static const uint64_t m[] = { 0xfee00, 0xfec00, 0xfed00, 0xf0000, 0xf0001, 0xfffff,
						0xc0000, 0xa0 };
		return m[rn(c, sizeof(m) / 8)]; }
	case 5: return 0x100000 + rn(c, 0x10000);			/* above 4 GiB */
	case 6: { static const uint64_t h[] = { 1ULL << 27, (1ULL << 27) - 1, 1ULL << 36, 1ULL << 40,
						(1ULL << 52) - 1, 1ULL << 52, ~0ULL, 1ULL << 63 };
		return h[rn(c, sizeof(h) / 8)]; }
	default: return (unbacked >> 12) + 512 + rn(c, 0x100000);
	}
}

/* ---- Argument buffers ------------------------------------------------------------------------ */
static void fill_random(struct cpu *c, uint8_t *p, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		p[i] = (uint8_t)rnd(c);
}

/* A pointer Xen can't follow (never NULL: page 0 is RAM here). */
static uint8_t *hostile_ptr(struct cpu *c, uint32_t len)
{
	switch (rn(c, 9)) {
	case 0: return (uint8_t *)(uintptr_t)(XEN_KIT_UNMAPPED_VA + rn(c, PAGE));
	case 1: return (uint8_t *)(uintptr_t)(0x0000800000000000ULL + rn(c, 64));	/* non-canonical */
	case 2: return (uint8_t *)(uintptr_t)(0x8000000000000000ULL | rnd(c) >> 17);
	case 3: return (uint8_t *)(uintptr_t)(0xffff800000000000ULL + rn(c, 1 << 20));	/* kernel half */
	case 4: return (uint8_t *)(uintptr_t)(unbacked_va + rn(c, 16 * PAGE));	/* mapped, not RAM */
	case 5: return (uint8_t *)(uintptr_t)(0xfee00000 + rn(c, PAGE));	/* LAPIC */
	case 6: return (uint8_t *)(uintptr_t)(0xfec00000 + rn(c, PAGE));	/* I/O APIC */
	case 7: return (uint8_t *)(uintptr_t)(0ULL - 1 - rn(c, len ? len - 1 : 1));	/* wraps at 2^64 */
	default: return (uint8_t *)(uintptr_t)(0x00007ffffffff000ULL + PAGE - 1 - rn(c, 8));	/* canonical end */
	}
}

/* Slots: 0 -> arena page 1, 1 -> page 0 (a struct across slots 0|1 has non-adjacent
 * frames), 2 -> page 3, 3 -> page 2, 4 -> page 0 / 5 unmapped, 6 -> page 2 / 7 unmapped. */
static uint8_t *slot_va(struct cpu *c, unsigned s) { return c->win + s * PAGE; }

/*
 * Place a LEN-byte argument for the call: in the primary zone (arena pages 0-1, ZONE 0), the
 * secondary one (pages 2-3, ZONE 1) or the third (pages 4-5, ZONE 2); across pages, at odd addresses, across non-adjacent
 * frames, running into an unmapped page, or at a hostile address (HOSTILE_PCT percent).
 * The bytes are random; the caller sets the fields it wants.
 */
static uint8_t *place(struct cpu *c, struct call *k, unsigned zone, uint32_t len, unsigned hostile_pct)
{
	struct buf *b = &k->b[k->nb++];
	uint8_t *z = c->arena + zone * 2 * PAGE;
	uint32_t span = len + 2 * SENT;

	memset(b, 0, sizeof(*b));
	b->len = len;
	if (len > 2 * PAGE - 2 * SENT)
		kit_fail(NAME ": buffer of %u bytes", len);
	if (chance(c, hostile_pct)) {
		b->va = hostile_ptr(c, len);
		b->faults = 1;
		return b->va;
	}
	unsigned how = rn(c, 10);
	if ((len > PAGE - 2 * SENT || zone == 2) && how >= 6)
		how = 0;				/* the window maps zones 0 and 1 only */
	switch (how) {
	case 0: case 1: case 2:		/* anywhere in the zone, 8-aligned */
		b->va = z + SENT + (rn(c, 2 * PAGE - span + 1) & ~7u);
		break;
	case 3:				/* across the page boundary of the zone */
		b->va = z + PAGE - (len > 1 ? 1 + rn(c, len - 1) : 0);
		if (b->va < z + SENT)
			b->va = z + SENT;
		break;
	case 4: case 5:			/* odd address */
		b->va = z + SENT + rn(c, 2 * PAGE - span + 1);
		break;
	case 6: case 7: {		/* across two virtual pages backed by swapped frames */
		uint8_t *w = slot_va(c, zone ? 2 : 0);
		b->va = w + PAGE - (len > 1 ? 1 + rn(c, len - 1) : 0);
		if (b->va < w + SENT)
			b->va = w + SENT;
		break;
	}
	default: {			/* into an unmapped page: Xen must fail (-EFAULT) */
		uint8_t *w = slot_va(c, zone ? 6 : 4);
		if (len < 2) {
			b->va = hostile_ptr(c, len);
			b->faults = 1;
			return b->va;
		}
		b->va = w + PAGE - 1 - rn(c, len - 1);
		b->mapped = (uint32_t)(w + PAGE - b->va);
		b->chk_before = 1;
		b->faults = 1;
		fill_random(c, b->va, b->mapped);
		return b->va;
	}
	}
	b->mapped = len;
	b->chk_before = b->chk_after = 1;
	fill_random(c, b->va, len);
	return b->va;
}

static void restore(struct buf *b)
{
	if (b->mapped)
		memset(b->va, PAT, b->mapped);
}

static bool sentinels_ok(const struct buf *b, long *where)
{
	for (unsigned i = 0; i < SENT; i++) {
		if (b->chk_before && b->va[-(long)SENT + i] != PAT) {
			*where = -(long)SENT + i;
			return false;
		}
		if (b->chk_after && b->va[b->len + i] != PAT) {
			*where = b->len + i;
			return false;
		}
	}
	return true;
}

/* ---- The call and its checks ------------------------------------------------------------------ */
static long hypercall_eax(uint64_t rax, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5)
{
	register uint64_t r asm("rax") = rax;
	register uint64_t d asm("rdi") = a1, s asm("rsi") = a2, x asm("rdx") = a3, t asm("r10") = a4,
		e asm("r8") = a5;
	/* The stub is "mov $nr, %eax; <out/vmcall>; ret": enter after the mov (Xen's and KVM's
	 * pages have the same shape), with our own EAX (and garbage in RAX's upper half). */
	asm volatile("call *%[entry]"
		     : "+r"(r), "+r"(d), "+r"(s), "+r"(x), "+r"(t), "+r"(e)
		     : [entry] "r"(xen_hypercall_page + 5)
		     : "memory", "cc", "rcx", "r11");
	return (long)r;
}

static void describe(const struct call *k, char *out, size_t n)
{
	snprintf(out, n, "%s%s nr=%#lx args=%#lx %#lx %#lx %#lx %#lx",
		 k->mode == 1 ? "compat " : k->mode == 2 ? "eax " : "", hc_name(k->nr < 128 ? k->nr : 128),
		 k->nr, k->a[0], k->a[1], k->a[2], k->a[3], k->a[4]);
}

static __attribute__((noreturn)) void fuzz_fail(struct cpu *c, const struct call *k, long rc, const char *why)
{
	char d[200];
	describe(k, d, sizeof(d));
	kit_fail(NAME ": seed=%lu vcpu %u call #%lu: %s = %ld: %s", seed, c->vcpu, c->seq, d, rc, why);
}

static long issue(struct cpu *c, struct call *k)
{
	long rc;

	if (verbose) {
		char d[200];
		describe(k, d, sizeof(d));
		printf(NAME ": vcpu %u #%lu %s\n", c->vcpu, c->seq, d);
	}
	if (k->mode == 1) {
		/* xen_compat_call keeps its target and saved RSP in globals: one CPU at a time */
		while (__atomic_exchange_n(&compat_lock, 1, __ATOMIC_ACQUIRE))
			barrier();
		rc = xen_compat_hypercall((unsigned)k->nr, (uint32_t)k->a[0], (uint32_t)k->a[1],
					  (uint32_t)k->a[2], (uint32_t)k->a[3], (uint32_t)k->a[4]);
		__atomic_store_n(&compat_lock, 0, __ATOMIC_RELEASE);
	}
	else if (k->mode == 2)
		rc = hypercall_eax(k->nr, k->a[0], k->a[1], k->a[2], k->a[3], k->a[4]);
	else
		rc = xen_hypercall_raw((unsigned)k->nr, k->a[0], k->a[1], k->a[2], k->a[3], k->a[4]);
	__atomic_fetch_add(&hc_count[k->mode == 2 && (uint32_t)k->nr >= 128 ? 128 : (uint32_t)k->nr & 127], 1,
			   __ATOMIC_RELAXED);
	c->calls++;
	if (rc < 0)
		c->errors++;

	if (rc < 0 && (rc < -127 || !(errno_ok[-rc / 32] >> (-rc % 32) & 1)))
		fuzz_fail(c, k, rc, "not a Xen errno");
	if (k->priv && rc != -XEN_EPERM && rc != -XEN_ENOSYS && rc != -XEN_EACCES && rc != -XEN_EFAULT)
		fuzz_fail(c, k, rc, "want -EPERM/-ENOSYS (no such hypercall for a domU)");
	if (k->want_efault && rc != -XEN_EFAULT)
		fuzz_fail(c, k, rc, "want -EFAULT (the argument can't be read)");
	for (unsigned i = 0; i < k->nb; i++) {
		long where;
		if (!sentinels_ok(&k->b[i], &where)) {
			char why[100];
			snprintf(why, sizeof(why), "buffer %u (%u bytes at %p) overrun at offset %ld",
				 i, k->b[i].len, k->b[i].va, where);
			fuzz_fail(c, k, rc, why);
		}
		restore(&k->b[i]);
	}
	return rc;
}

/* ---- Families ------------------------------------------------------------------------------------- */
static void hc(struct call *k, unsigned nr, uint64_t a1, uint64_t a2, uint64_t a3)
{
	k->nr = nr;
	k->a[0] = a1;
	k->a[1] = a2;
	k->a[2] = a3;
}
#define P(x) ((uint64_t)(uintptr_t)(x))

static void f_xen_version(struct cpu *c, struct call *k)
{
	/* bytes written; a domU's commandline is "<denied>" (strlen + 1, common/kernel.c) */
	static const uint32_t size[] = { 0, 16, 144, 1024, 64, 8, 8, 0, 16, 9, 0 };
	uint32_t cmd = chance(c, 80) ? rn(c, 11) : chance(c, 50) ? 11 + rn(c, 20) : pick32(c);
	uint8_t *p = NULL;

	if (cmd == XENVER_build_id) {
		uint32_t n = rn(c, 256);
		p = place(c, k, 0, 4 + n, 20);
		if (!k->b[0].faults)
			*(uint32_t *)p = chance(c, 80) ? n : pick32(c);
	} else if (cmd < 11 && size[cmd]) {
		p = place(c, k, 0, size[cmd], 25);
		if (cmd == XENVER_get_features && !k->b[0].faults)
			*(uint32_t *)p = chance(c, 60) ? rn(c, 3) : pick32(c);
		/* do_xen_version copies these to (or get_features from) the guest */
		k->want_efault = k->b[0].faults;
	} else if (cmd == XENVER_pagesize || cmd >= 11) {
		p = chance(c, 50) ? NULL : place(c, k, 0, 64, 30);
	}
	hc(k, __HYPERVISOR_xen_version, cmd, P(p), pick64(c));
}

static void f_memory_op(struct cpu *c, struct call *k)
{
	static const uint8_t cmds[] = { XENMEM_increase_reservation, XENMEM_decrease_reservation,
		XENMEM_populate_physmap, XENMEM_maximum_ram_page, XENMEM_current_reservation,
		XENMEM_maximum_reservation, XENMEM_maximum_gpfn, XENMEM_add_to_physmap,
		XENMEM_add_to_physmap_batch, XENMEM_memory_map, XENMEM_machphys_mapping,
		XENMEM_machine_memory_map, XENMEM_exchange, XENMEM_machphys_mfn_list,
		XENMEM_remove_from_physmap };
	uint32_t cmd = chance(c, 92) ? cmds[rn(c, sizeof(cmds))] : 16 + rn(c, 48);
	uint64_t hi = chance(c, 10) ? (uint64_t)rn(c, 1 << 20) << MEMOP_EXTENT_SHIFT : 0;	/* continuation bits */
	uint8_t *p = NULL;

	switch (cmd) {
	case XENMEM_increase_reservation: case XENMEM_decrease_reservation: case XENMEM_populate_physmap: {
		p = place(c, k, 0, sizeof(struct xen_memory_reservation), 20);
		if (k->b[0].faults)
			break;
		struct xen_memory_reservation *r = (void *)p;
		uint32_t n = rn(c, 17);
		uint64_t *list = (uint64_t *)(void *)place(c, k, 1, 8 * (n ? n : 1), 15);
		r->extent_order = chance(c, 70) ? 0 : chance(c, 70) ? 1 + rn(c, 3) : pick32(c);
		/* An extent of order <= 3 at the scratch base stays inside the scratch area (8
		 * pages, aligned); larger ones only over gfns that aren't RAM. */
		for (uint32_t i = 0; i < n && !k->b[1].faults; i++) {
			uint64_t g = pick_gfn(c);
			if (r->extent_order && g >> 3 == P(scratch) >> 15)
				g = r->extent_order <= 3 ? P(scratch) >> 12 : 1ULL << 40;
			memcpy(&list[i], &g, 8);
		}
		r->extent_start = chance(c, 5) ? 0 : P(list);
		r->nr_extents = chance(c, 80) ? n : pick64(c);
		r->mem_flags = chance(c, 80) ? 0 : pick32(c);
		r->domid = pick_domid(c);
		break;
	}
	case XENMEM_current_reservation: case XENMEM_maximum_reservation: case XENMEM_maximum_gpfn:
		p = place(c, k, 0, 2, 20);
		if (!k->b[0].faults)
			*(uint16_t *)(void *)p = pick_domid(c);
		break;
	case XENMEM_add_to_physmap: {
		p = place(c, k, 0, sizeof(struct xen_add_to_physmap), 20);
		if (k->b[0].faults)
			break;
		struct xen_add_to_physmap *x = (void *)p;
		x->domid = pick_domid(c);
		x->size = (uint16_t)pick32(c);
		x->space = chance(c, 85) ? rn(c, 7) : pick32(c);
		x->idx = chance(c, 70) ? rn(c, 70) : pick64(c);
		x->gpfn = pick_gfn(c);
		k->shinfo_moved_if_ok = true;
		break;
	}
	case XENMEM_add_to_physmap_batch: {
		p = place(c, k, 0, sizeof(struct xen_add_to_physmap_batch), 20);
		if (k->b[0].faults)
			break;
		struct xen_add_to_physmap_batch *x = (void *)p;
		uint16_t n = chance(c, 85) ? rn(c, 17) : (uint16_t)pick32(c);
		uint32_t room = n <= 16 ? n : 16;
		x->domid = pick_domid(c);
		x->space = chance(c, 85) ? rn(c, 7) : (uint16_t)pick32(c);
		x->size = n;
		x->res0 = (uint16_t)rnd(c);
		/* idxs and gpfns share the secondary buffer, errs is the third; a huge size
		 * only comes with arrays Xen can't reach (else it'd read our other memory). */
		uint8_t *arr = place(c, k, 1, 16 * (room ? room : 1), n > 16 ? 100 : 15);
		uint8_t *errs = place(c, k, 2, 4 * (room ? room : 1), n > 16 ? 100 : 15);
		if (!k->b[1].faults) {
			for (uint32_t i = 0; i < room; i++) {
				uint64_t idx = chance(c, 70) ? rn(c, 70) : pick64(c), g = pick_gfn(c);
				memcpy(arr + 8 * i, &idx, 8);
				memcpy(arr + 8 * room + 8 * i, &g, 8);
			}
		}
		x->idxs = P(arr);
		x->gpfns = k->b[1].faults ? P(arr) : P(arr + 8 * room);
		x->errs = P(errs);
		k->shinfo_maybe_moved = true;
		break;
	}
	case XENMEM_memory_map: {
		p = place(c, k, 0, sizeof(struct xen_memory_map), 20);
		if (k->b[0].faults)
			break;
		struct xen_memory_map *m = (void *)p;
		uint32_t n = chance(c, 80) ? rn(c, 33) : pick32(c);
		uint32_t room = n <= 32 ? n : 32;	/* Xen writes min(n, e820 entries) < 32 */
		m->nr_entries = n;
		m->buffer = P(place(c, k, 1, 20 * (room ? room : 1), 20));
		break;
	}
	case XENMEM_remove_from_physmap: {	/* { domid; xen_pfn_t gpfn } */
		p = place(c, k, 0, 16, 20);
		if (!k->b[0].faults) {
			*(uint16_t *)(void *)p = pick_domid(c);
			uint64_t g = pick_gfn(c);
			memcpy(p + 8, &g, 8);
		}
		break;
	}
	case XENMEM_maximum_ram_page:
		p = chance(c, 50) ? NULL : hostile_ptr(c, 8);
		break;
	default:				/* machphys_*, exchange, unknown: not for HVM */
		p = chance(c, 50) ? NULL : hostile_ptr(c, 64);
		break;
	}
	hc(k, __HYPERVISOR_memory_op, cmd | hi, P(p), 0);
}

static void f_hvm_op(struct cpu *c, struct call *k)
{
	uint32_t op = chance(c, 85) ? (chance(c, 70) ? rn(c, 2) : chance(c, 60) ? HVMOP_set_evtchn_upcall_vector :
				       HVMOP_pagetable_dying) : rn(c, 64);
	uint8_t *p = NULL;

	if (op == HVMOP_set_param || op == HVMOP_get_param) {
		p = place(c, k, 0, sizeof(struct xen_hvm_param), 20);
		k->want_efault = k->b[0].faults;	/* hvm.c: copy_from_guest first */
		if (!k->b[0].faults) {
			struct xen_hvm_param *x = (void *)p;
			x->domid = pick_domid(c);
			x->index = chance(c, 60) ? rn(c, 45) : pick32(c);
			x->value = pick64(c);
			if (op == HVMOP_set_param && x->index == HVM_PARAM_CALLBACK_IRQ) {
				uint64_t mid = chance(c, 30) ? (rnd(c) & 0x00ffffffffffff00ULL) : 0;
				switch (rn(c, 6)) {
				case 0: x->value = HVM_CALLBACK_GSI(pick32(c)); break;
				case 1: x->value = HVM_CALLBACK_VECTOR(pick_vector(c)) | mid; break;
				case 2: x->value = HVM_CALLBACK_PCI_INTX(rn(c, 2) ? 0 : pick32(c) & 0xffff,
						rn(c, 2) ? 0 : rn(c, 256), rnd(c) & 0xff, 1 + rn(c, 4)); break;
				case 3: x->value = ((uint64_t)(3 + rn(c, 253)) << 56) | (rnd(c) >> 8); break;
				case 4: x->value = 0; break;
				default: x->value = HVM_CALLBACK_VECTOR(XEN_KIT_UPCALL_VECTOR); break;
				}
			}
		}
	} else if (op == HVMOP_set_evtchn_upcall_vector) {
		p = place(c, k, 0, sizeof(struct xen_hvm_evtchn_upcall_vector), 20);
		k->want_efault = k->b[0].faults;
		if (!k->b[0].faults) {
			struct xen_hvm_evtchn_upcall_vector *u = (void *)p;
			u->vcpu = pick_vcpu(c);
			/* an exception vector would hit a vCPU that exists: only past 0x20 then */
			u->vector = u->vcpu < ncpus ? (chance(c, 50) ? XEN_KIT_UPCALL_VECTOR : pick_vector(c))
						    : (uint8_t)rnd(c);
		}
	} else {
		p = place(c, k, 0, 64, 20);
		if (op == HVMOP_pagetable_dying && !k->b[0].faults)
			((struct xen_hvm_pagetable_dying *)(void *)p)->domid = pick_domid(c);
	}
	hc(k, __HYPERVISOR_hvm_op, op, P(p), 0);
}

static void f_vcpu_op(struct cpu *c, struct call *k)
{
	uint32_t cmd = chance(c, 92) ? rn(c, 14) : pick32(c);
	uint32_t vcpu = pick_vcpu(c);
	uint8_t *p = NULL;

	switch (cmd) {
	case VCPUOP_initialise:			/* only a vCPU that's up, or none at all */
		if (vcpu < ncpus)
			vcpu = c->vcpu;
		p = place(c, k, 0, 64, 30);
		break;
	case VCPUOP_up:
		if (vcpu < ncpus)
			vcpu = c->vcpu;		/* up already: 0; the down/up pair is the BSP's */
		break;
	case VCPUOP_down:			/* never an existing vCPU here (see downup()) */
		if (vcpu < ncpus)
			vcpu = 64;
		break;
	case VCPUOP_is_up:
		break;
	case VCPUOP_get_runstate_info:
		p = place(c, k, 0, sizeof(struct vcpu_runstate_info), 25);
		break;
	case VCPUOP_register_runstate_memory_area: case VCPUOP_register_vcpu_time_memory_area: {
		p = place(c, k, 0, 8, 15);
		if (!k->b[0].faults) {
			uint64_t a;
			unsigned r = rn(c, 10);
			/* Xen writes there from now on: only our Xen-written area, or nothing */
			a = r < 6 ? P(xen_written[c->idx]) + rn(c, 2 * PAGE - 48) : r < 7 ? 0 : P(hostile_ptr(c, 48));
			memcpy(p, &a, 8);
		}
		break;
	}
	case VCPUOP_set_periodic_timer: {
		p = place(c, k, 0, 8, 15);
		if (!k->b[0].faults) {
			static const uint64_t per[] = { 0, 1, 999999, 1000000, 2000000, 10000000,
				50000000, (1ULL << 62) - 1, 1ULL << 62, ~0ULL };
			uint64_t v = chance(c, 80) ? per[rn(c, sizeof(per) / 8)] : pick64(c);
			memcpy(p, &v, 8);
		}
		break;
	}
	case VCPUOP_set_singleshot_timer: {
		p = place(c, k, 0, sizeof(struct vcpu_set_singleshot_timer), 15);
		if (!k->b[0].faults) {
			struct vcpu_set_singleshot_timer *t = (void *)p;
			uint64_t now = xen_now();
			switch (rn(c, 5)) {
			case 0: t->timeout_abs_ns = now + rn(c, 5000000); break;
			case 1: t->timeout_abs_ns = now - rn(c, 1000000); break;
			case 2: t->timeout_abs_ns = pick64(c); break;
			case 3: t->timeout_abs_ns = (1ULL << 63) + rn(c, 100); break;
			default: t->timeout_abs_ns = ~0ULL; break;
			}
			t->flags = chance(c, 70) ? rn(c, 2) : pick32(c);
		}
		break;
	}
	case VCPUOP_register_vcpu_info: {
		/* already registered for every vCPU at start: this can't succeed */
		p = place(c, k, 0, sizeof(struct vcpu_register_vcpu_info), 20);
		if (!k->b[0].faults) {
			struct vcpu_register_vcpu_info *r = (void *)p;
			r->mfn = pick_gfn(c);
			r->offset = chance(c, 50) ? rn(c, 65) * 64 : pick32(c);
			r->rsvd = chance(c, 80) ? 0 : pick32(c);
		}
		break;
	}
	case VCPUOP_send_nmi:			/* Xen: a non-NULL argument is -EINVAL */
		p = place(c, k, 0, 16, 30);
		if (vcpu < ncpus && !k->b[0].faults && chance(c, 50))
			vcpu = 64;
		break;
	default:
		p = chance(c, 50) ? NULL : place(c, k, 0, 64, 30);
		break;
	}
	hc(k, __HYPERVISOR_vcpu_op, cmd, vcpu, P(p));
}

static void f_sched_op(struct cpu *c, struct call *k)
{
	static const uint8_t cmds[] = { SCHEDOP_yield, SCHEDOP_poll, SCHEDOP_poll, SCHEDOP_poll,
		SCHEDOP_remote_shutdown, SCHEDOP_shutdown_code, SCHEDOP_watchdog, SCHEDOP_pin_override };
	uint32_t cmd = chance(c, 92) ? cmds[rn(c, sizeof(cmds))] : 8 + rn(c, 100);
	uint8_t *p = NULL;

	switch (cmd) {
	case SCHEDOP_poll: {
		p = place(c, k, 0, sizeof(struct sched_poll), 15);
		k->want_efault = k->b[0].faults;
		if (k->b[0].faults)
			break;
		struct sched_poll *s = (void *)p;
		uint32_t n = chance(c, 85) ? rn(c, 9) : pick32(c);
		uint32_t room = n <= 8 ? n : 8;
		uint32_t *ports = (uint32_t *)(void *)place(c, k, 1, 4 * (room ? room : 1), n > 8 ? 100 : 15);
		for (uint32_t i = 0; i < room && !k->b[1].faults; i++)
			ports[i] = pick_port(c);
		s->ports = P(ports);
		s->nr_ports = n;
		/* always a short timeout: no poll may outlive it (a past one returns at once) */
		uint64_t now = xen_now();
		s->timeout = chance(c, 70) ? now + rn(c, 2000000) : chance(c, 50) ? 1 : now - rn(c, 1000000);
		break;
	}
	case SCHEDOP_remote_shutdown: {		/* { domid_t domain_id; unsigned int reason } */
		p = place(c, k, 0, 8, 20);
		k->want_efault = k->b[0].faults;
		if (!k->b[0].faults) {
			*(uint16_t *)(void *)p = pick_domid(c);
			*(uint32_t *)(void *)(p + 4) = pick32(c);
		}
		break;
	}
	case SCHEDOP_shutdown_code:		/* only recorded: nothing here shuts down */
		p = place(c, k, 0, 4, 20);
		k->want_efault = k->b[0].faults;
		break;
	case SCHEDOP_watchdog: {		/* { uint32 id; uint32 timeout }: id 0 would arm one */
		p = place(c, k, 0, 8, 20);
		if (!k->b[0].faults) {
			*(uint32_t *)(void *)p = 1 + rn(c, 0xfffffffe);
			*(uint32_t *)(void *)(p + 4) = 0;
		}
		break;
	}
	case SCHEDOP_yield:
		p = chance(c, 50) ? NULL : hostile_ptr(c, 8);
		break;
	default:
		p = place(c, k, 0, 16, 30);
		break;
	}
	hc(k, __HYPERVISOR_sched_op, cmd, P(p), 0);
}

static void f_evtchn_op(struct cpu *c, struct call *k)
{
	static const uint8_t size[] = { 12, 12, 12, 4, 4, 24, 8, 8, 8, 4, 2, 24, 8, 8 };
	uint32_t cmd = chance(c, 94) ? rn(c, 14) : 14 + rn(c, 100);

	if (cmd == EVTCHNOP_reset && chance(c, 80))
		cmd = EVTCHNOP_send;		/* reset closes everything: keep it rare */
	uint8_t *p = place(c, k, 0, cmd < 14 ? size[cmd] : 32, 15);
	/* event_channel.c: every op copies its struct in first (the FIFO ops too); with
	 * `fifo=off` (--xen-fifo off) the FIFO ops don't exist and are -ENOSYS unread. */
	static int fifo = -1;
	if (fifo < 0)
		fifo = !kit_cmdline_has("fifo=off");
	k->want_efault = k->b[0].faults && (cmd < EVTCHNOP_init_control || (fifo && cmd <= EVTCHNOP_set_priority));
	if (!k->b[0].faults) {
		uint32_t *w = (uint32_t *)(void *)p;
		switch (cmd) {
		case EVTCHNOP_bind_interdomain:
			w[0] = pick_domid(c) | (chance(c, 80) ? 0 : pick32(c) << 16);
			w[1] = pick_port(c);
			break;
		case EVTCHNOP_bind_virq:
			w[0] = chance(c, 70) ? rn(c, 26) : pick32(c);
			w[1] = pick_vcpu(c);
			break;
		case EVTCHNOP_bind_pirq:
			w[0] = (uint32_t)pick_pirq(c);
			w[1] = chance(c, 70) ? rn(c, 2) : pick32(c);
			break;
		case EVTCHNOP_alloc_unbound:
			w[0] = pick_domid(c) | (uint32_t)pick_domid(c) << 16;
			break;
		case EVTCHNOP_bind_ipi:
			w[0] = pick_vcpu(c);
			break;
		case EVTCHNOP_close: case EVTCHNOP_send: case EVTCHNOP_unmask:
			w[0] = pick_port(c);
			break;
		case EVTCHNOP_status:
			w[0] = pick_domid(c);
			w[1] = pick_port(c);
			break;
		case EVTCHNOP_bind_vcpu:
			w[0] = pick_port(c);
			w[1] = pick_vcpu(c);
			break;
		case EVTCHNOP_reset:
			*(uint16_t *)w = pick_domid(c);
			break;
		case EVTCHNOP_init_control:
			/* Never a valid one: switching this domain to FIFO would end its 2-level
			 * checks (xen_fifo covers FIFO).  A vCPU out of range (-ENOENT) or an odd
			 * offset (-EINVAL), whatever the gfn. */
			if (chance(c, 50))
				w[3] = 0x100 | pick32(c);
			else
				w[2] = pick32(c) | 1;
			break;
		case EVTCHNOP_set_priority:
			w[0] = pick_port(c);
			w[1] = chance(c, 70) ? rn(c, 17) : pick32(c);
			break;
		}
	}
	hc(k, __HYPERVISOR_event_channel_op, cmd, P(p), 0);
}

static void f_grant_table_op(struct cpu *c, struct call *k)
{
	uint32_t cmd = chance(c, 90) ? rn(c, 12) : pick32(c);
	uint32_t count = chance(c, 75) ? 1 : pick32(c);
	uint8_t *p;

	switch (cmd) {
	case GNTTABOP_query_size:
		p = place(c, k, 0, sizeof(struct gnttab_query_size), 20);
		if (!k->b[0].faults)
			*(uint16_t *)(void *)p = pick_domid(c);
		break;
	case GNTTABOP_setup_table: {
		p = place(c, k, 0, sizeof(struct gnttab_setup_table), 20);
		if (k->b[0].faults)
			break;
		struct gnttab_setup_table *s = (void *)p;
		uint32_t n = chance(c, 80) ? rn(c, 66) : pick32(c);
		s->dom = pick_domid(c);
		s->nr_frames = n;
		s->frame_list = P(place(c, k, 1, 8 * (n && n <= 64 ? n : 1), n > 64 ? 100 : 15));
		break;
	}
	case GNTTABOP_set_version:
		p = place(c, k, 0, 4, 20);
		if (!k->b[0].faults)
			*(uint32_t *)(void *)p = chance(c, 70) ? rn(c, 4) : pick32(c);
		break;
	case GNTTABOP_get_version:
		p = place(c, k, 0, 8, 20);
		if (!k->b[0].faults)
			*(uint16_t *)(void *)p = pick_domid(c);
		break;
	default:		/* map/unmap/copy/transfer/...: never with more than our buffer holds */
		p = place(c, k, 0, 64, 30);
		if (count > 1 && !k->b[0].faults)
			count = 1;
		break;
	}
	hc(k, __HYPERVISOR_grant_table_op, cmd, P(p), count);
}

static void f_console_io(struct cpu *c, struct call *k)
{
	uint32_t cmd = chance(c, 80) ? CONSOLEIO_write : chance(c, 50) ? CONSOLEIO_read : pick32(c);
	uint32_t off = rn(c, PAGE + 7);
	uint32_t count;
	const char *p;

	if (cmd == CONSOLEIO_write) {
		if (chance(c, 75)) {		/* from our printable buffer, never past its end */
			count = chance(c, 90) ? rn(c, 120) : rn(c, CONS_SIZE - off + 1);
			p = cons + off;
		} else {
			count = chance(c, 50) ? rn(c, 64) : pick32(c);
			p = (const char *)hostile_ptr(c, 1);
			k->want_efault = count != 0;
		}
	} else {				/* read or unknown: -EPERM for a domU (XSM first) */
		count = chance(c, 70) ? rn(c, 256) : pick32(c);
		p = (const char *)place(c, k, 1, count <= 256 ? (count ? count : 1) : 1, count > 256 ? 100 : 20);
	}
	hc(k, __HYPERVISOR_console_io, cmd, count, P(p));
}

static void f_vm_assist(struct cpu *c, struct call *k)
{
	hc(k, __HYPERVISOR_vm_assist, chance(c, 80) ? rn(c, 4) : pick32(c),
	   chance(c, 70) ? rn(c, 70) : pick32(c), pick64(c));
}

static void f_physdev_op(struct cpu *c, struct call *k)
{
	static const uint8_t cmds[] = { PHYSDEVOP_eoi, PHYSDEVOP_map_pirq, PHYSDEVOP_unmap_pirq,
		PHYSDEVOP_irq_status_query, PHYSDEVOP_get_free_pirq, PHYSDEVOP_setup_gsi };
	uint32_t cmd = chance(c, 85) ? cmds[rn(c, sizeof(cmds))] : chance(c, 80) ? rn(c, 40) : pick32(c);
	uint8_t *p;

	switch (cmd) {
	case PHYSDEVOP_map_pirq: {
		p = place(c, k, 0, sizeof(struct physdev_map_pirq), 15);
		k->want_efault = k->b[0].faults;
		if (k->b[0].faults)
			break;
		struct physdev_map_pirq *m = (void *)p;
		m->domid = pick_domid(c);
		m->type = chance(c, 80) ? (int32_t)rn(c, 6) : (int32_t)pick32(c);
		m->index = chance(c, 60) ? (int32_t)rn(c, 48) : pick_pirq(c);
		m->pirq = pick_pirq(c);
		m->bus = chance(c, 70) ? 0 : (int32_t)pick32(c);
		m->devfn = chance(c, 70) ? (int32_t)rn(c, 256) : (int32_t)pick32(c);
		m->entry_nr = chance(c, 70) ? (int32_t)rn(c, 8) : (int32_t)pick32(c);
		m->table_base = chance(c, 70) ? 0 : pick64(c);
		break;
	}
	case PHYSDEVOP_unmap_pirq:
		p = place(c, k, 0, sizeof(struct physdev_unmap_pirq), 15);
		k->want_efault = k->b[0].faults;
		if (!k->b[0].faults) {
			struct physdev_unmap_pirq *u = (void *)p;
			u->domid = pick_domid(c);
			u->pirq = pick_pirq(c);
		}
		break;
	case PHYSDEVOP_eoi: case PHYSDEVOP_irq_status_query:
		p = place(c, k, 0, cmd == PHYSDEVOP_eoi ? sizeof(struct physdev_eoi) :
			  sizeof(struct physdev_irq_status_query), 15);
		k->want_efault = k->b[0].faults;
		if (!k->b[0].faults)
			*(int32_t *)(void *)p = pick_pirq(c);
		break;
	case PHYSDEVOP_get_free_pirq:
		p = place(c, k, 0, sizeof(struct physdev_get_free_pirq), 15);
		k->want_efault = k->b[0].faults;
		if (!k->b[0].faults)
			*(int32_t *)(void *)p = chance(c, 70) ? (int32_t)rn(c, 6) : (int32_t)pick32(c);
		break;
	default:
		p = place(c, k, 0, 64, 25);
		break;
	}
	hc(k, __HYPERVISOR_physdev_op, cmd, P(p), 0);
}

static void f_set_timer_op(struct cpu *c, struct call *k)
{
	uint64_t now = xen_now(), t;

	switch (rn(c, 6)) {
	case 0: t = 0; break;
	case 1: t = now + rn(c, 5000000); break;
	case 2: t = now - rn(c, 1000000); break;
	case 3: t = (1ULL << 63) + rn(c, 1000); break;		/* negative s_time_t: +100 ms */
	case 4: t = now + (1ULL << 51); break;			/* huge: +100 ms */
	default: t = pick64(c); break;
	}
	hc(k, __HYPERVISOR_set_timer_op, t, pick64(c), 0);
}

/* Hypercalls a domU doesn't get: privileged ones and those with no HVM handler. */
static void f_refused(struct cpu *c, struct call *k)
{
	static const uint8_t nos[] = { 0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 14, 16, 19, 22, 25, 26, 27,
		28, 30, 31, 37, 38, 39, 40, 41, 42, 43, 47, 48, 49, 50, 51, 52, 53, 54, 55, 63, 64, 100, 127,
		__HYPERVISOR_platform_op, __HYPERVISOR_domctl, __HYPERVISOR_sysctl, __HYPERVISOR_multicall };
	unsigned nr = nos[rn(c, sizeof(nos))];
	uint8_t *p = place(c, k, 0, 128, 30);

	k->priv = true;
	hc(k, nr, P(p), pick64(c), pick64(c));
	k->a[3] = pick64(c);
	k->a[4] = pick64(c);
	if (nr == __HYPERVISOR_multicall) {	/* HVM has it: an empty list is 0 on Xen */
		k->priv = false;
		if (!k->b[0].faults)
			k->a[1] = 0;		/* a list of calls: only an empty one (or unreadable) */
	}
}

/* EAX beyond the hypercall page (or with garbage above bit 31): entered at stub+5. */
static void f_beyond(struct cpu *c, struct call *k)
{
	uint32_t lo = chance(c, 50) ? 128 + rn(c, 1024) : chance(c, 50) ? 0x80000000u | (uint32_t)rnd(c)
		    : (uint32_t)rnd(c) | 128;
	if (lo < 128)
		lo += 128;
	k->mode = 2;
	k->priv = true;
	hc(k, lo | (chance(c, 50) ? rnd(c) << 32 : 0), pick64(c), pick64(c), pick64(c));
}

/* The 32-bit ABI: ops whose 32-bit use can't change the layout latch (shared_info, vcpu_info
 * registration, CALLBACK_IRQ) or reach pages beyond our buffers. */
static void f_compat(struct cpu *c, struct call *k)
{
	uint8_t *p = place(c, k, 0, 64, 15);
	uint32_t a1 = 0, a2 = (uint32_t)P(p), a3 = 0;
	unsigned nr;

	if (!k->b[0].faults && P(p) >> 32) {	/* the window is above 4 GiB: not for 32-bit code */
		k->b[0].faults = 1;
		k->b[0].mapped = 0;
		memset(p - SENT, PAT, 64 + 2 * SENT);
	}
	if (k->b[0].faults)			/* a 32-bit hostile address */
		a2 = chance(c, 50) ? 0xfee00000 + rn(c, PAGE) : chance(c, 50) ? (uint32_t)unbacked_va : 0xfffffff0u + rn(c, 16);
	switch (rn(c, 9)) {
	case 0: nr = __HYPERVISOR_xen_version; a1 = chance(c, 80) ? rn(c, 11) : pick32(c);
		if (a1 == XENVER_compile_info || a1 == XENVER_capabilities || a1 == XENVER_build_id)
			a1 = XENVER_extraversion;		/* bigger than our 64 bytes */
		break;
	case 1: nr = __HYPERVISOR_event_channel_op; a1 = chance(c, 90) ? rn(c, 10) : pick32(c);
		if (a1 == EVTCHNOP_reset || a1 == EVTCHNOP_init_control)
			a1 = EVTCHNOP_status;		/* no reset storm; never a switch to FIFO */
		if (!k->b[0].faults) {
			uint32_t *w = (uint32_t *)(void *)p;
			w[0] = a1 == EVTCHNOP_status || a1 == EVTCHNOP_alloc_unbound ? pick_domid(c) : pick_port(c);
			w[1] = chance(c, 50) ? pick_port(c) : pick_vcpu(c);
		}
		break;
	case 2: nr = __HYPERVISOR_hvm_op; a1 = HVMOP_get_param;
		if (!k->b[0].faults) {
			*(uint16_t *)(void *)p = pick_domid(c);
			*(uint32_t *)(void *)(p + 4) = chance(c, 70) ? rn(c, 45) : pick32(c);
		}
		break;
	case 3: { nr = __HYPERVISOR_vcpu_op;
		static const uint8_t ok[] = { VCPUOP_is_up, VCPUOP_get_runstate_info, VCPUOP_stop_periodic_timer,
					      VCPUOP_stop_singleshot_timer, 11, 12, 14, 99 };
		a1 = ok[rn(c, sizeof(ok))];
		a3 = a2;
		a2 = pick_vcpu(c);
		break; }
	case 4: { nr = __HYPERVISOR_sched_op;
		a1 = chance(c, 30) ? SCHEDOP_yield : SCHEDOP_poll;
		if (a1 == SCHEDOP_poll && !k->b[0].faults) {
			struct compat_sched_poll *s = (void *)p;
			uint64_t t = xen_now() + rn(c, 2000000);
			uint32_t n = chance(c, 85) ? rn(c, 5) : pick32(c);
			s->ports = (uint32_t)P(p + 32);	/* 4 ports in the same 64 bytes */
			s->nr_ports = n;
			for (unsigned i = 0; i < 4; i++)
				((uint32_t *)(void *)(p + 32))[i] = pick_port(c);
			if (n > 4)
				s->ports = chance(c, 50) ? 0xfee00000 : (uint32_t)unbacked_va;
			s->timeout_lo = (uint32_t)t;
			s->timeout_hi = (uint32_t)(t >> 32);
		}
		break; }
	case 5: nr = __HYPERVISOR_grant_table_op; a1 = chance(c, 50) ? GNTTABOP_query_size : GNTTABOP_get_version;
		if (!k->b[0].faults)
			*(uint16_t *)(void *)p = pick_domid(c);
		a3 = chance(c, 80) ? 1 : pick32(c);
		break;
	case 6: nr = __HYPERVISOR_physdev_op;
		a1 = chance(c, 80) ? (rn(c, 2) ? PHYSDEVOP_eoi : chance(c, 50) ? PHYSDEVOP_irq_status_query :
				      PHYSDEVOP_get_free_pirq) : rn(c, 40);
		if (a1 == PHYSDEVOP_map_pirq)
			a1 = PHYSDEVOP_unmap_pirq;
		if (!k->b[0].faults)
			*(int32_t *)(void *)p = a1 == PHYSDEVOP_unmap_pirq ? (int32_t)DOMID_SELF : pick_pirq(c);
		break;
	case 7: nr = __HYPERVISOR_console_io; a1 = CONSOLEIO_write;
		a2 = chance(c, 80) ? rn(c, 100) : pick32(c);
		a3 = (uint32_t)P(cons + rn(c, PAGE));
		if (a2 > 100)
			a3 = 0xfee00000;
		break;
	default: { nr = __HYPERVISOR_set_timer_op;
		uint64_t t = chance(c, 30) ? 0 : xen_now() + rn(c, 5000000);
		a1 = (uint32_t)t;
		a2 = (uint32_t)(t >> 32);
		break; }
	}
	k->mode = 1;
	hc(k, nr, a1, a2, a3);
	k->a[3] = pick32(c);
	k->a[4] = pick32(c);
}

/* ---- PIRQ storm (storm=1) ---------------------------------------------------------------------------- */
/*
 * MSI-X entry 0 of the PCI test device names a PIRQ (Linux's order: get_free_pirq(MSI), the
 * message programmed with the entry masked, bind_pirq; the VMM unmasks the entry at bind, as
 * Xen's arch_evtchn_bind_pirq does) bound to a port of vCPU 0.  The device's timer thread sends
 * storm_count messages storm_us apart; vCPU 0 re-arms it between its calls whenever it ran out.
 * MSI-X only: software must not enable MSI and MSI-X together (PCI 3.0 §6.8), and the device
 * has one timer.
 *
 * The fuzzer may legitimately hit the storm: EVTCHNOP_close of a random port or EVTCHNOP_reset
 * (the port is gone; its number may be reused at once), bind_vcpu to vCPU 1 (the kit's upcall
 * leaves another vCPU's port pending), bind_pirq of our PIRQ to a port of its own after a close
 * (-EEXIST for us), unmap_pirq (harmless: the next message maps it again).  storm_check()
 * notices by EVTCHNOP_status and re-binds (the same PIRQ, or a fresh one whose message is
 * programmed into the entry), moves the port back (mask, bind_vcpu, unmask: Linux's
 * rebind_evtchn_to_cpu), and kicks a port left pending with no upcall (mask + EVTCHNOP_unmask
 * re-raises it: event_2l.c evtchn_2l_unmask) - counted, since a kick may hide a lost upcall.
 * Events are counted by a handler only while the port is ours; those taken in an interval
 * that ended with the port lost may belong to whatever the fuzzer bound there and are kept
 * apart.  Nothing here draws from the fuzzer's PRNG.
 */
#define STORM_ENTRY 0

static int storm;
static uint32_t storm_us, storm_count;
static struct testdev td;
static uint32_t storm_pirq;			/* 0: none yet (pirq 0 is never an MSI pirq) */
static volatile evtchn_port_t storm_port;
static volatile bool storm_bound;
static volatile uint32_t storm_rx;		/* events since the last check (handler, vCPU 0) */
static uint64_t storm_events, storm_unsure, storm_armed;
static uint32_t storm_bursts, storm_binds, storm_lost, storm_moved_back, storm_new_pirqs, storm_bind_errs,
	storm_kicks, storm_unmasked;
static bool storm_was_pending;			/* pending and unmasked at the previous check */

static void storm_event(evtchn_port_t p, void *arg)
{
	(void)arg;
	if (storm_bound && p == storm_port)
		__atomic_fetch_add(&storm_rx, 1, __ATOMIC_SEQ_CST);
}

/* A fresh MSI pirq programmed into the entry (left masked: bind_pirq unmasks it). */
static bool storm_new_pirq(void)
{
	uint32_t p;
	if (xen_get_free_pirq(MAP_PIRQ_TYPE_MSI, &p) != 0)
		return false;
	storm_pirq = p;
	storm_new_pirqs++;
	td_entry_program(&td, STORM_ENTRY, XEN_PIRQ_MSI_ADDR(p), XEN_PIRQ_MSI_DATA);
	return true;
}

static void storm_bind(void)
{
	evtchn_port_t p = 0;
	long rc = -XEN_EEXIST;

	cli();				/* the handler is set before an event can be taken */
	if (storm_pirq)
		rc = xen_bind_pirq(storm_pirq, 0, &p);
	if (rc == -XEN_EEXIST && storm_new_pirq())	/* the fuzzer bound ours to a port of its own */
		rc = xen_bind_pirq(storm_pirq, 0, &p);
	if (rc == 0 && p >= XEN_KIT_MAX_PORTS) {	/* beyond the kit's counters: try later */
		xen_evtchn_close(p);
		rc = -XEN_ENOSPC;
	}
	if (rc != 0) {
		sti();
		storm_bind_errs++;
		return;
	}
	storm_port = p;
	storm_bound = true;
	xen_evtchn_set_handler(p, storm_event, NULL);
	sti();
	if (xen_evtchn_masked(p))	/* a mask bit left from the port's earlier life */
		storm_unmasked++;
	xen_evtchn_unmask(p);
	storm_binds++;
}

static void storm_arm(void)
{
	td_write(&td, TD_COUNT, storm_count);
	td_write(&td, TD_TIMER, TD_TARGET_MSIX | STORM_ENTRY);
	storm_armed += storm_count;
	storm_bursts++;
}

/* Account the events since the last check and repair what the fuzzer did to the port. */
static void storm_check(void)
{
	struct evtchn_status st;

	if (storm_bound) {
		evtchn_port_t p = storm_port;
		long rc = xen_evtchn_status(p, &st);
		uint32_t n = __atomic_exchange_n(&storm_rx, 0, __ATOMIC_SEQ_CST);
		if (rc == 0 && st.status == EVTCHNSTAT_pirq && st.u.pirq == storm_pirq) {
			storm_events += n;
			if (st.vcpu != 0) {
				xen_evtchn_mask(p);
				if (xen_evtchn_bind_vcpu(p, 0) == 0)
					storm_moved_back++;
				xen_evtchn_unmask(p);
			} else if (xen_evtchn_pending(p) && !xen_evtchn_masked(p) && storm_was_pending && n == 0) {
				/* pending and unmasked at two checks with not one event taken between */
				xen_evtchn_mask(p);
				xen_evtchn_unmask(p);
				storm_kicks++;
			}
			storm_was_pending = xen_evtchn_pending(p) && !xen_evtchn_masked(p);
		} else {
			storm_unsure += n;
			storm_lost++;
			storm_was_pending = false;
			cli();
			storm_bound = false;
			xen_evtchn_set_handler(p, NULL, NULL);
			sti();
		}
	}
	if (!storm_bound)
		storm_bind();
}

/* vCPU 0, between its calls. */
static void storm_tick(void)
{
	storm_check();
	if (td_reg(&td, TD_TIMER) == 0)
		storm_arm();
}

static void storm_setup(void)
{
	if (!td_find(&td))
		kit_fail(NAME ": storm=1 needs the PCI test device: run with --pci-testdev");
	td_clear_counters(&td);
	td_msix_ctrl(&td, MSIX_FLAGS_ENABLE);
	td_write(&td, TD_PERIOD, storm_us);
	if (!storm_new_pirq())
		kit_fail(NAME ": storm: get_free_pirq(MSI) failed");
	storm_new_pirqs = 0;
	storm_bind();
	if (!storm_bound)
		kit_fail(NAME ": storm: bind_pirq(%u) failed", storm_pirq);
	if (td_entry_masked(&td, STORM_ENTRY))
		kit_fail(NAME ": storm: MSI-X entry still masked after bind_pirq(%u)", storm_pirq);
	storm_arm();
	printf(NAME ": storm: MSI-X entry %u -> pirq %u -> port %u, bursts of %u messages %u us apart\n",
	       STORM_ENTRY, storm_pirq, storm_port, storm_count, storm_us);
}

static void storm_progress(void)
{
	printf(NAME ": storm: %lu events (+%lu unsure), %u bursts, port lost %u, re-bound %u, moved back %u, "
	       "new pirqs %u, kicks %u\n", storm_events, storm_unsure, storm_bursts, storm_lost, storm_binds - 1,
	       storm_moved_back, storm_new_pirqs, storm_kicks);
}

/* Stop the timer, take what is in flight, check the counts on both sides. */
static void storm_end(void)
{
	td_write(&td, TD_TIMER, TD_TIMER_STOP);
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(50));
	storm_check();
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(20));
	storm_check();
	uint32_t sent = td_reg(&td, TD_SENT_MSIX), pended = td_reg(&td, TD_PENDED_MSIX);
	uint32_t dropped = td_reg(&td, TD_DROPPED), left = td_reg(&td, TD_TIMER);
	printf(NAME ": storm: %lu events received (+%lu on a port lost meanwhile) from %u sent + %u pended "
	       "MSI-X messages (%lu armed in %u bursts, %u dropped); port lost %u times, re-bound %u, moved back "
	       "%u, new pirqs %u, bind errors %u, mask bits cleared %u, stuck-pending kicks %u\n",
	       storm_events, storm_unsure, sent, pended, storm_armed, storm_bursts, dropped, storm_lost,
	       storm_binds - 1, storm_moved_back, storm_new_pirqs, storm_bind_errs, storm_unmasked, storm_kicks);
	if (left != 0)
		kit_fail(NAME ": seed=%lu storm: the timer still has %u messages after TIMER_STOP", seed, left);
	if (storm_events == 0)
		kit_fail(NAME ": seed=%lu storm: no event received", seed);
	if (storm_events > (uint64_t)sent + pended)
		kit_fail(NAME ": seed=%lu storm: %lu events received > %u sent + %u pended", seed, storm_events,
			 sent, pended);
	if ((uint64_t)sent + pended > storm_armed)
		kit_fail(NAME ": seed=%lu storm: %u sent + %u pended > %lu armed", seed, sent, pended, storm_armed);
	if (dropped)
		kit_fail(NAME ": seed=%lu storm: %u messages dropped", seed, dropped);
}

/* ---- Driver ----------------------------------------------------------------------------------------- */
typedef void (*family_fn)(struct cpu *, struct call *);
static const struct { family_fn fn; unsigned weight; } families[] = {
	{ f_xen_version, 8 }, { f_memory_op, 10 }, { f_hvm_op, 8 }, { f_vcpu_op, 10 },
	{ f_sched_op, 8 }, { f_evtchn_op, 14 }, { f_grant_table_op, 6 }, { f_console_io, 3 },
	{ f_vm_assist, 3 }, { f_physdev_op, 10 }, { f_set_timer_op, 4 }, { f_refused, 6 },
	{ f_beyond, 3 }, { f_compat, 6 },
};

static void check_memory(struct cpu *c, const char *when)
{
	for (unsigned i = 0; i < sizeof(canary); i++)
		if (canary[i] != (uint8_t)(0x3c ^ i ^ (i >> 8)))
			kit_fail(NAME ": seed=%lu vcpu %u after call #%lu (%s): canary byte %u changed to %#x",
				 seed, c->vcpu, c->seq, when, i, canary[i]);
	const uint64_t *a = (const uint64_t *)(const void *)c->arena;
	for (unsigned i = 0; i < ARENA_PAGES * PAGE / 8; i++)
		if (a[i] != 0xa5a5a5a5a5a5a5a5ULL)
			kit_fail(NAME ": seed=%lu vcpu %u after call #%lu (%s): argument arena qword at +%#x is %#lx",
				 seed, c->vcpu, c->seq, when, i * 8, a[i]);
}

static void shinfo_back(struct cpu *c, struct call *k)
{
	struct xen_add_to_physmap x = { .domid = DOMID_SELF, .space = XENMAPSPACE_shared_info,
					.gpfn = (uintptr_t)xen_shared_info >> 12 };
	long rc = HYPERVISOR_memory_op(XENMEM_add_to_physmap, &x);
	if (rc != 0)
		fuzz_fail(c, k, rc, "moving shared_info back to its page failed");
}

static void one_call(struct cpu *c)
{
	struct call k;
	unsigned total = 0, r;

	memset(&k, 0, sizeof(k));
	for (unsigned i = 0; i < sizeof(families) / sizeof(families[0]); i++)
		total += families[i].weight;
	r = rn(c, total);
	for (unsigned i = 0;; i++) {
		if (r < families[i].weight) {
			families[i].fn(c, &k);
			break;
		}
		r -= families[i].weight;
	}
	if (k.mode == 1)
		k.want_efault = false;		/* a 32-bit pointer is another address */
	c->seq++;
	long rc = issue(c, &k);

	/* shared_info may have moved (the struct is restored already): put it back */
	if ((k.shinfo_moved_if_ok || k.shinfo_maybe_moved) && rc == 0)
		shinfo_back(c, &k);
}

/* The struct is restored before we could look at it: remember ports from a second, clean call. */
static void harvest_port(struct cpu *c)
{
	evtchn_port_t p;
	long rc = chance(c, 50) ? xen_evtchn_alloc_unbound(DOMID_SELF, &p) : xen_evtchn_bind_ipi(c->vcpu, &p);
	if (rc == 0)
		remember_port(c, p);
}

/* BSP: VCPUOP_down(1), a few calls, VCPUOP_up(1) (xen_ipi_smp checks the semantics). */
static void downup(struct cpu *c)
{
	long rc = HYPERVISOR_vcpu_op(VCPUOP_down, 1, NULL);
	if (rc != 0)
		kit_fail(NAME ": seed=%lu VCPUOP_down(1) = %ld", seed, rc);
	for (unsigned i = rn(c, 4); i; i--)
		one_call(c);
	rc = HYPERVISOR_vcpu_op(VCPUOP_up, 1, NULL);
	if (rc != 0)
		kit_fail(NAME ": seed=%lu VCPUOP_up(1) = %ld", seed, rc);
	if (HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, NULL) != 1)
		kit_fail(NAME ": seed=%lu vCPU 1 not up after VCPUOP_up", seed);
	downups++;
}

static void fuzz_loop(struct cpu *c, uint64_t n, volatile int *stop)
{
	for (uint64_t i = 0; stop ? !*stop : i < n; i++) {
		one_call(c);
		if (stop)
			ap_progress++;
		if ((c->seq & 15) == 0)
			harvest_port(c);
		if ((c->seq & 63) == 0)
			check_memory(c, "periodic");
		if (rn(c, 32) == 0)		/* let pending upcalls in */
			XEN_WAIT_UNTIL(false, xen_now() + rn(c, 300000));
		if (!stop && ncpus > 1 && rn(c, 200) == 0)
			downup(c);
		if (!stop && verbose == 0 && i && i % 1000 == 0) {
			printf(NAME ": %lu calls (vCPU 1: %lu)\n", i, (uint64_t)ap_progress);
			if (storm)
				storm_progress();
		}
		if (!stop && storm && (i & 7) == 7)	/* not from the PRNG: the calls stay the seed's */
			storm_tick();
	}
}

static void cpu_init(struct cpu *c, unsigned idx)
{
	c->idx = idx;
	c->vcpu = xen_vcpu_id();
	c->s = seed ^ (0x5851f42d4c957f2dULL * (idx + 1));
	c->arena = arena[idx];
	c->win = (uint8_t *)(uintptr_t)(XEN_KIT_VA_WINDOW + (uint64_t)idx * NSLOTS * PAGE);
	memset(c->arena, PAT, sizeof(arena[idx]));
	if (xen_register_vcpu_info(vinfo_page[idx], 0) != 0)
		kit_fail(NAME ": register_vcpu_info on vCPU %u failed", c->vcpu);
	xen_use_upcall_vector();
}

static void ap_main(void)
{
	xen_wait_init();
	cpu_init(&cpus[1], 1);
	__atomic_store_n(&ap_ready, 1, __ATOMIC_SEQ_CST);
	fuzz_loop(&cpus[1], 0, &ap_stop);
	check_memory(&cpus[1], "end");
	__atomic_store_n(&ap_done, 1, __ATOMIC_SEQ_CST);
	for (;;)
		XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(10));
}

void kit_main(void)
{
	seed = xen_cmdline_u64("seed", 1);
	ncalls = xen_cmdline_u64("calls", 2000);
	verbose = (int)xen_cmdline_u64("verbose", 0);
	storm = (int)xen_cmdline_u64("storm", 0);
	storm_us = (uint32_t)xen_cmdline_u64("storm_us", 200);
	storm_count = (uint32_t)xen_cmdline_u64("storm_count", 4096);
	printf(NAME ": seed=%lu calls=%lu\n", seed, ncalls);
	xen_test_start(NAME);
	pic_mask_all();
	for (unsigned i = 0; i < sizeof(xen_errnos); i++)
		errno_ok[xen_errnos[i] / 32] |= 1u << (xen_errnos[i] % 32);
	unbacked = xen_unbacked_paddr();
	/* Xen pages may be placed in unbacked's first MiB (pick_gfn); the second one stays empty */
	unbacked_va = unbacked + 0x100000;
	for (unsigned i = 0; i < sizeof(canary); i++)
		canary[i] = (uint8_t)(0x3c ^ i ^ (i >> 8));
	for (unsigned i = 0; i < CONS_SIZE; i++)	/* printable, and never "PASS"/"FAIL" */
		cons[i] = (i % 61 == 60) ? '\n' : "fuzz console abcdeghijklmnoqrtvwxy 0123456789"[i % 45];
	for (unsigned v = 0x20; v < 0xff; v++)	/* events may come on any of them */
		if (v != XEN_KIT_WAKE_VECTOR)
			kit_set_handler(v, xen_upcall_isr_eoi);
	/* the window: per CPU, slots as described at slot_va() */
	for (unsigned cpu = 0; cpu < 2; cpu++) {
		static const int8_t page_of[NSLOTS] = { 1, 0, 3, 2, 0, -1, 2, -1 };
		for (unsigned s = 0; s < NSLOTS; s++)
			if (page_of[s] >= 0)
				xen_map_4k(cpu * NSLOTS + s, P(arena[cpu]) + page_of[s] * PAGE);
	}

	long up1 = HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, NULL);	/* -ENOENT with one vCPU */
	if (up1 >= 0)
		ncpus = 2;
	cpu_init(&cpus[0], 0);
	printf(NAME ": %u vCPU(s), unbacked %#lx, scratch %p\n", ncpus, unbacked, scratch);
	if (storm)
		storm_setup();
	if (ncpus > 1) {
		if (kit_start_ap(1, ap_main) != 0)
			kit_fail(NAME ": AP did not start");
		if (!XEN_WAIT_UNTIL(ap_ready, xen_now() + XEN_MS(5000)))
			kit_fail(NAME ": AP not ready");
	}

	uint64_t t0 = xen_now();
	fuzz_loop(&cpus[0], ncalls, NULL);
	if (ncpus > 1) {
		uint64_t seen = ap_progress;
		ap_stop = 1;
		if (!XEN_WAIT_UNTIL(ap_done, xen_now() + XEN_MS(10000)))
			kit_fail(NAME ": seed=%lu vCPU 1 did not finish (stuck after %lu calls)", seed, (uint64_t)ap_progress);
		if (!seen)
			kit_fail(NAME ": seed=%lu vCPU 1 made no calls", seed);
	}
	if (storm)
		storm_end();
	check_memory(&cpus[0], "end");
	uint64_t ms = (xen_now() - t0) / 1000000;
	uint64_t total = cpus[0].calls + cpus[1].calls, errs = cpus[0].errors + cpus[1].errors;

	printf(NAME ": seed=%lu: %lu calls (vCPU 0: %lu, vCPU 1: %lu), %lu errors, %u down/up, %lu ms, %lu calls/s\n",
	       seed, total, cpus[0].calls, cpus[1].calls, errs, downups, ms, ms ? total * 1000 / ms : 0);
	printf(NAME ": per hypercall:");
	for (unsigned nr = 0; nr < NHC; nr++)
		if (hc_count[nr]) {
			if (nr < 128 && !strcmp(hc_name(nr), "other"))
				printf(" %u=%u", nr, hc_count[nr]);
			else
				printf(" %s=%u", hc_name(nr), hc_count[nr]);
		}
	printf("\n");
	xen_pass();
}
