/*
 * Xen HVM guest library (see kit/xen.h).  Linked from build/kit/libxen.a,
 * so only guests that use it carry it.
 */
#include "xen.h"

/* ---- State ------------------------------------------------------------------ */
uint8_t xen_hypercall_page[4096] __attribute__((aligned(4096)));
static uint8_t shared_info_page[4096] __attribute__((aligned(4096)));
static uint8_t scratch_pages[XEN_SCRATCH_PAGES][4096] __attribute__((aligned(4096)));

struct xen_info xen_info;
struct shared_info *volatile xen_shared_info;
static struct vcpu_info *volatile vcpu_info_of[KIT_MAX_CPUS];
static volatile uint32_t vcpu_id_of[KIT_MAX_CPUS];
static volatile uint8_t vcpu_id_known[KIT_MAX_CPUS];
const char *xen_test_name = "xen";
int xen_keep_going, xen_failures;

static struct {
	xen_evtchn_cb_t cb;
	void *arg;
} port_handler[XEN_KIT_MAX_PORTS];
static volatile uint8_t port_owner[EVTCHN_2L_NR_CHANNELS];
volatile uint32_t xen_evtchn_count[XEN_KIT_MAX_PORTS];
volatile uint64_t xen_evtchn_last_ns[XEN_KIT_MAX_PORTS];
volatile struct xen_upcall_stats xen_upcall_stats[KIT_MAX_CPUS];

static inline unsigned this_cpu(void) { return lapic_id() & (KIT_MAX_CPUS - 1); }

void *xen_scratch_page(unsigned i)
{
	if (i >= XEN_SCRATCH_PAGES)
		kit_fail("xen_scratch_page(%u): only %d pages", i, XEN_SCRATCH_PAGES);
	return scratch_pages[i];
}

/* ---- Detection and the hypercall page ---------------------------------------- */
uint32_t xen_detect(void)
{
	uint32_t found = 0;

	for (uint32_t base = XEN_CPUID_FIRST_LEAF; base <= XEN_CPUID_LAST_BASE; base += 0x100) {
		struct cpuid r = cpuid(base, 0);
		/* "XenVMMXenVMM" in EBX ECX EDX */
		if (r.b == 0x566e6558 && r.c == 0x65584d4d && r.d == 0x4d4d566e && r.a >= base + 2)
			found = base;	/* the highest base wins (Linux xen_cpuid_base) */
	}
	return found;
}

void xen_init(void)
{
	uint32_t base = xen_detect();

	xen_keep_going = xen_cmdline_u64("keep_going", 0) != 0;
	if (!base)
		kit_fail("xen: no \"XenVMMXenVMM\" CPUID signature in 0x40000000..0x4000ff00");
	xen_info.base = base;
	xen_info.max_leaf = cpuid(base, 0).a;
	xen_info.version = cpuid(base + 1, 0).a;
	struct cpuid r = cpuid(base + 2, 0);
	xen_info.hcall_pages = r.a;
	xen_info.hcall_msr = r.b;
	xen_info.domid = ~0u;
	if (xen_info.max_leaf >= base + 4) {
		r = cpuid(base + 4, 0);
		xen_info.hvm_flags = r.a;
		if (r.a & XEN_HVM_CPUID_DOMID_PRESENT)
			xen_info.domid = r.c;
	}
	if (xen_info.hcall_pages < 1 || !xen_info.hcall_msr)
		kit_fail("xen: CPUID base+2 gives %u hypercall pages, MSR %#x",
			 xen_info.hcall_pages, xen_info.hcall_msr);

	/* Page 0 of the hypercall area at GPA xen_hypercall_page (identity mapped). */
	wrmsr(xen_info.hcall_msr, (uint64_t)(uintptr_t)xen_hypercall_page);
	if (xen_hypercall_page[__HYPERVISOR_xen_version * 32] == 0)
		kit_fail("xen: hypercall page still empty after wrmsr(%#x)", xen_info.hcall_msr);

	printf("xen: CPUID base %#x, Xen %u.%u, hypercall MSR %#x, HVM flags %#x\n",
	       base, xen_info.version >> 16, xen_info.version & 0xffff,
	       xen_info.hcall_msr, xen_info.hvm_flags);
}

uint32_t xen_vcpu_id(void)
{
	unsigned cpu = this_cpu();

	if (!vcpu_id_known[cpu]) {
		uint32_t id = lapic_id();
		if (xen_info.base && xen_info.max_leaf >= xen_info.base + 4) {
			struct cpuid r = cpuid(xen_info.base + 4, 0);
			if (r.a & XEN_HVM_CPUID_VCPU_ID_PRESENT)
				id = r.b;
		}
		vcpu_id_of[cpu] = id;
		vcpu_id_known[cpu] = 1;
	}
	return vcpu_id_of[cpu];
}

uint32_t xen_features(void)
{
	struct xen_feature_info fi = { .submap_idx = 0 };
	long rc = HYPERVISOR_xen_version(XENVER_get_features, &fi);

	if (rc)
		kit_fail("xen: XENVER_get_features = %ld", rc);
	return fi.submap;
}

/* ---- shared_info / vcpu_info --------------------------------------------------- */
struct shared_info *xen_map_shared_info(void)
{
	struct xen_add_to_physmap xatp = {
		.domid = DOMID_SELF,
		.space = XENMAPSPACE_shared_info,
		.idx = 0,
		.gpfn = (uintptr_t)shared_info_page >> 12,
	};
	long rc = HYPERVISOR_memory_op(XENMEM_add_to_physmap, &xatp);

	if (rc)
		kit_fail("xen: add_to_physmap(shared_info) = %ld", rc);
	xen_shared_info = (struct shared_info *)shared_info_page;
	return xen_shared_info;
}

struct vcpu_info *xen_vcpu_info(void)
{
	unsigned cpu = this_cpu();
	struct vcpu_info *vi = vcpu_info_of[cpu];

	if (vi)
		return vi;
	uint32_t id = xen_vcpu_id();
	if (!xen_shared_info || id >= XEN_LEGACY_MAX_VCPUS)
		kit_fail("xen: no vcpu_info for vCPU %u (shared_info %p)", id, (void *)xen_shared_info);
	return &xen_shared_info->vcpu_info[id];
}

long xen_register_vcpu_info(void *page, unsigned offset)
{
	struct vcpu_register_vcpu_info info = {
		.mfn = (uintptr_t)page >> 12,
		.offset = offset,
	};
	long rc = HYPERVISOR_vcpu_op(VCPUOP_register_vcpu_info, xen_vcpu_id(), &info);

	if (rc == 0)
		vcpu_info_of[this_cpu()] = (struct vcpu_info *)((uint8_t *)page + offset);
	return rc;
}

/* ---- Event channels --------------------------------------------------------------- */
long xen_evtchn_alloc_unbound(domid_t remote, evtchn_port_t *port)
{
	struct evtchn_alloc_unbound op = { .dom = DOMID_SELF, .remote_dom = remote };
	long rc = HYPERVISOR_event_channel_op(EVTCHNOP_alloc_unbound, &op);

	if (rc == 0 && port)
		*port = op.port;
	if (rc == 0)
		xen_evtchn_set_owner(op.port, 0);
	return rc;
}

long xen_evtchn_bind_interdomain(domid_t remote, evtchn_port_t remote_port, evtchn_port_t *port)
{
	struct evtchn_bind_interdomain op = { .remote_dom = remote, .remote_port = remote_port };
	long rc = HYPERVISOR_event_channel_op(EVTCHNOP_bind_interdomain, &op);

	if (rc == 0 && port)
		*port = op.local_port;
	if (rc == 0)
		xen_evtchn_set_owner(op.local_port, 0);
	return rc;
}

long xen_evtchn_bind_virq(uint32_t virq, uint32_t vcpu, evtchn_port_t *port)
{
	struct evtchn_bind_virq op = { .virq = virq, .vcpu = vcpu };
	long rc = HYPERVISOR_event_channel_op(EVTCHNOP_bind_virq, &op);

	if (rc == 0 && port)
		*port = op.port;
	if (rc == 0)
		xen_evtchn_set_owner(op.port, vcpu);
	return rc;
}

long xen_evtchn_bind_ipi(uint32_t vcpu, evtchn_port_t *port)
{
	struct evtchn_bind_ipi op = { .vcpu = vcpu };
	long rc = HYPERVISOR_event_channel_op(EVTCHNOP_bind_ipi, &op);

	if (rc == 0 && port)
		*port = op.port;
	if (rc == 0)
		xen_evtchn_set_owner(op.port, vcpu);
	return rc;
}

long xen_evtchn_bind_vcpu(evtchn_port_t port, uint32_t vcpu)
{
	struct evtchn_bind_vcpu op = { .port = port, .vcpu = vcpu };
	long rc = HYPERVISOR_event_channel_op(EVTCHNOP_bind_vcpu, &op);

	if (rc == 0)
		xen_evtchn_set_owner(port, vcpu);
	return rc;
}

long xen_evtchn_send(evtchn_port_t port)
{
	struct evtchn_send op = { .port = port };
	return HYPERVISOR_event_channel_op(EVTCHNOP_send, &op);
}

long xen_evtchn_close(evtchn_port_t port)
{
	struct evtchn_close op = { .port = port };
	return HYPERVISOR_event_channel_op(EVTCHNOP_close, &op);
}

long xen_evtchn_unmask(evtchn_port_t port)
{
	struct evtchn_unmask op = { .port = port };
	return HYPERVISOR_event_channel_op(EVTCHNOP_unmask, &op);
}

long xen_evtchn_status(evtchn_port_t port, struct evtchn_status *st)
{
	memset(st, 0, sizeof(*st));
	st->dom = DOMID_SELF;
	st->port = port;
	return HYPERVISOR_event_channel_op(EVTCHNOP_status, st);
}

void xen_evtchn_set_handler(evtchn_port_t port, xen_evtchn_cb_t cb, void *arg)
{
	if (port >= XEN_KIT_MAX_PORTS)
		kit_fail("xen: port %u beyond the kit's table (%d)", port, XEN_KIT_MAX_PORTS);
	port_handler[port].arg = arg;
	port_handler[port].cb = cb;
}

void xen_evtchn_set_owner(evtchn_port_t port, uint32_t vcpu)
{
	if (port < EVTCHN_2L_NR_CHANNELS)
		port_owner[port] = (uint8_t)vcpu;
}

static unsigned lowest_bit(uint64_t x)	/* x != 0; no bsf/tzcnt needed */
{
	unsigned b = 0;
	if (!(x & 0xffffffffu)) { x >>= 32; b += 32; }
	if (!(x & 0xffffu)) { x >>= 16; b += 16; }
	if (!(x & 0xffu)) { x >>= 8; b += 8; }
	while (!(x & 1)) { x >>= 1; b++; }
	return b;
}

unsigned xen_upcall(void)
{
	unsigned cpu = this_cpu();
	volatile struct vcpu_info *vi = xen_vcpu_info();
	volatile struct shared_info *s = xen_shared_info;
	uint32_t me = xen_vcpu_id();
	unsigned handled = 0;

	xen_upcall_stats[cpu].calls++;
	if (!vi->evtchn_upcall_pending)
		xen_upcall_stats[cpu].spurious++;

	while (vi->evtchn_upcall_pending) {
		vi->evtchn_upcall_pending = 0;
		barrier();
		uint64_t sel = __atomic_exchange_n(&vi->evtchn_pending_sel, 0, __ATOMIC_SEQ_CST);

		while (sel) {
			unsigned w = lowest_bit(sel);
			sel &= sel - 1;
			uint64_t bits = s->evtchn_pending[w] & ~s->evtchn_mask[w];

			while (bits) {
				unsigned b = lowest_bit(bits);
				evtchn_port_t port = w * 64 + b;
				bits &= bits - 1;
				if (port_owner[port] != me)
					continue;	/* another vCPU's port (Linux: cpu_evtchn mask) */
				if (!xen_test_and_clear_bit(b, &s->evtchn_pending[w]))
					continue;
				handled++;
				if (port < XEN_KIT_MAX_PORTS) {
					xen_evtchn_last_ns[port] = xen_now();
					xen_evtchn_count[port]++;
					if (port_handler[port].cb)
						port_handler[port].cb(port, port_handler[port].arg);
				}
			}
		}
	}
	xen_upcall_stats[cpu].ports += handled;
	return handled;
}

void xen_upcall_isr_eoi(struct kit_frame *f)
{
	(void)f;
	xen_upcall();
	lapic_eoi();
}

void xen_upcall_isr_noeoi(struct kit_frame *f)
{
	(void)f;
	xen_upcall();
}

/* ---- HVMOP ------------------------------------------------------------------------- */
long xen_hvm_set_param(uint32_t index, uint64_t value)
{
	struct xen_hvm_param p = { .domid = DOMID_SELF, .index = index, .value = value };
	return HYPERVISOR_hvm_op(HVMOP_set_param, &p);
}

long xen_hvm_get_param(uint32_t index, uint64_t *value)
{
	struct xen_hvm_param p = { .domid = DOMID_SELF, .index = index, .value = 0xdeadbeefULL };
	long rc = HYPERVISOR_hvm_op(HVMOP_get_param, &p);

	if (value)
		*value = p.value;
	return rc;
}

long xen_set_upcall_vector(uint32_t vcpu, uint8_t vector)
{
	struct xen_hvm_evtchn_upcall_vector op = { .vcpu = vcpu, .vector = vector };
	return HYPERVISOR_hvm_op(HVMOP_set_evtchn_upcall_vector, &op);
}

/* ---- PIRQs ------------------------------------------------------------------------- */
long xen_map_pirq_gsi(unsigned gsi, int *pirq)
{
	struct physdev_map_pirq m = {
		.domid = DOMID_SELF, .type = MAP_PIRQ_TYPE_GSI, .index = (int32_t)gsi,
		.pirq = pirq ? *pirq : -1,
	};
	long rc = HYPERVISOR_physdev_op(PHYSDEVOP_map_pirq, &m);

	if (pirq)
		*pirq = m.pirq;
	return rc;
}

long xen_unmap_pirq(int pirq)
{
	struct physdev_unmap_pirq u = { .domid = DOMID_SELF, .pirq = pirq };
	return HYPERVISOR_physdev_op(PHYSDEVOP_unmap_pirq, &u);
}

long xen_pirq_eoi(uint32_t pirq)
{
	struct physdev_eoi e = { .irq = pirq };
	return HYPERVISOR_physdev_op(PHYSDEVOP_eoi, &e);
}

long xen_pirq_status(uint32_t pirq, uint32_t *flags)
{
	struct physdev_irq_status_query q = { .irq = pirq, .flags = 0xdead };
	long rc = HYPERVISOR_physdev_op(PHYSDEVOP_irq_status_query, &q);

	if (flags)
		*flags = q.flags;
	return rc;
}

long xen_get_free_pirq(int type, uint32_t *pirq)
{
	struct physdev_get_free_pirq g = { .type = type, .pirq = 0xdeadbeef };
	long rc = HYPERVISOR_physdev_op(PHYSDEVOP_get_free_pirq, &g);

	if (pirq)
		*pirq = g.pirq;
	return rc;
}

long xen_bind_pirq(uint32_t pirq, uint32_t flags, evtchn_port_t *port)
{
	struct evtchn_bind_pirq b = { .pirq = pirq, .flags = flags };
	long rc = HYPERVISOR_event_channel_op(EVTCHNOP_bind_pirq, &b);

	if (rc == 0) {
		xen_evtchn_set_owner(b.port, 0);	/* event_channel.c: notify_vcpu_id 0 */
		if (port)
			*port = b.port;
	}
	return rc;
}

/* ---- Time -------------------------------------------------------------------------- */
uint64_t xen_pvclock_scale(uint64_t delta, uint32_t mul, int8_t shift)
{
	if (shift < 0)
		delta >>= -shift;
	else
		delta <<= shift;
	return (uint64_t)(((unsigned __int128)delta * mul) >> 32);	/* plain `mul`, no mulx */
}

uint64_t xen_pvclock_read(const volatile struct vcpu_time_info *t)
{
	uint32_t v;
	uint64_t ns;

	do {
		v = t->version;
		barrier();
		uint64_t tsc = rdtsc();
		ns = t->system_time + xen_pvclock_scale(tsc - t->tsc_timestamp,
							t->tsc_to_system_mul, t->tsc_shift);
		barrier();
	} while ((v & 1) || v != t->version);
	return ns;
}

uint64_t xen_now(void)
{
	return xen_pvclock_read(&xen_vcpu_info()->time);
}

uint64_t xen_tsc_hz(void)
{
	volatile struct vcpu_time_info *t = &xen_vcpu_info()->time;
	uint32_t mul = t->tsc_to_system_mul;
	int8_t shift = t->tsc_shift;

	if (!mul)
		return 0;
	uint64_t hz = (1000000000ULL << 32) / mul;	/* 4.3e18 fits in 64 bits */
	return shift < 0 ? hz << -shift : hz >> shift;
}

void xen_wallclock(uint64_t *sec, uint32_t *nsec)
{
	volatile struct shared_info *s = xen_shared_info;
	uint32_t v;

	do {
		v = s->wc_version;
		barrier();
		*sec = s->wc_sec | ((uint64_t)s->wc_sec_hi << 32);
		*nsec = s->wc_nsec;
		barrier();
	} while ((v & 1) || v != s->wc_version);
}

long xen_set_singleshot(uint64_t deadline_ns, uint32_t flags)
{
	struct vcpu_set_singleshot_timer t = { .timeout_abs_ns = deadline_ns, .flags = flags };
	return HYPERVISOR_vcpu_op(VCPUOP_set_singleshot_timer, xen_vcpu_id(), &t);
}

volatile uint32_t xen_wake_count;

static void wake_isr(struct kit_frame *f)
{
	(void)f;
	xen_wake_count++;
	lapic_eoi();
}

void xen_wait_init(void)
{
	lapic_enable();
	kit_set_handler(XEN_KIT_WAKE_VECTOR, wake_isr);
}

void xen_arm_wake(uint64_t deadline_ns)
{
	uint64_t now = xen_now();
	uint64_t ns = deadline_ns > now ? deadline_ns - now : 0;

	if (ns > XEN_MS(50))
		ns = XEN_MS(50);
	/* KVM's LAPIC timer runs at 1 GHz / divide; 16 ns per tick at divide 16. */
	lapic_timer_oneshot(XEN_KIT_WAKE_VECTOR, 16, (uint32_t)(ns / 16) + 1);
}

void xen_spin_until(uint64_t deadline_ns)
{
	while (xen_now() < deadline_ns)
		barrier();
}

/* ---- CPL 3 ------------------------------------------------------------------------------ */
extern uint64_t kit_gdt[];
extern char __bss_start[], _end[];
extern char xen_user_exit[], xen_user_return[];
extern uint64_t xen_user_saved_rsp;

struct tss64 {
	uint32_t reserved0;
	uint64_t rsp0, rsp1, rsp2;
	uint64_t reserved1;
	uint64_t ist[7];
	uint64_t reserved2;
	uint16_t reserved3;
	uint16_t iomap_base;
} __attribute__((packed));
_Static_assert(sizeof(struct tss64) == 104, "TSS size");

static uint64_t xen_gdt[8] __attribute__((aligned(16)));
static struct tss64 xen_tss __attribute__((aligned(16)));
static uint8_t tss_stack[8192] __attribute__((aligned(16)));
uint8_t xen_user_stack[8192] __attribute__((aligned(16)));
static bool user_ready;

static uint64_t *pt_entry_ptr(uint64_t table_paddr, unsigned index)
{
	return (uint64_t *)(uintptr_t)((table_paddr & 0x000ffffffffff000ULL) + 8 * index);
}

static void flush_tlb(void)
{
	asm volatile("mov %%cr3, %%rax; mov %%rax, %%cr3" ::: "rax", "memory");
}

static void user_init(void)
{
	/* GDT: the kit's four entries, then user data (0x20), user code64 (0x28), TSS (0x30). */
	for (int i = 0; i < 4; i++)
		xen_gdt[i] = kit_gdt[i];
	xen_gdt[4] = 0x00cff3000000ffffULL;	/* DPL 3 data, flat */
	xen_gdt[5] = 0x00affb000000ffffULL;	/* DPL 3 code, L=1 */
	uint64_t base = (uintptr_t)&xen_tss, limit = sizeof(xen_tss) - 1;
	xen_gdt[6] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ULL << 40) |
		     (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
	xen_gdt[7] = base >> 32;
	xen_tss.rsp0 = (uintptr_t)(tss_stack + sizeof(tss_stack));
	xen_tss.iomap_base = sizeof(xen_tss);	/* no I/O bitmap: IOPL decides */

	struct { uint16_t limit; uint64_t base; } __attribute__((packed)) gdtr = {
		sizeof(xen_gdt) - 1, (uintptr_t)xen_gdt,
	};
	asm volatile("lgdt %0" :: "m"(gdtr) : "memory");
	asm volatile("ltr %w0" :: "r"(0x30) : "memory");

	/* U bit on the path to the image: PML4[0], PDPT[0], and the 2 MiB PDEs it spans. */
	uint64_t *pml4e = pt_entry_ptr(read_cr3(), 0);
	*pml4e |= 4;
	uint64_t *pdpte = pt_entry_ptr(*pml4e, 0);
	*pdpte |= 4;
	for (uintptr_t a = 0x100000 & ~0x1fffffUL; a < (uintptr_t)_end; a += 0x200000)
		*pt_entry_ptr(*pdpte, a >> 21) |= 4;
	flush_tlb();
	user_ready = true;
}

/* #UD at xen_user_exit from CPL 3: go back to ring 0 (xen_user_return) with %rdi. */
static void user_exit_ud(struct kit_frame *f)
{
	if (f->rip != (uintptr_t)xen_user_exit || (f->cs & 3) != 3) {
		printf("EXCEPTION vector=6 error=0 rip=%#lx\n", f->rip);
		kit_exit(3);
	}
	f->rip = (uintptr_t)xen_user_return;
	f->cs = KIT_CS64;
	f->ss = KIT_DS;
	f->rsp = xen_user_saved_rsp;
	f->rflags = 0x2;		/* IF 0; xen_user_return's popfq restores the caller's */
}

long xen_user_call_asm(long (*fn)(void *), void *arg);
long xen_user_call(long (*fn)(void *), void *arg)
{
	if (!user_ready)
		user_init();
	kit_set_handler(6, user_exit_ud);
	long r = xen_user_call_asm(fn, arg);
	kit_set_handler(6, NULL);
	return r;
}

void xen_user_fault_return(struct kit_frame *f, long value)
{
	f->rip = (uintptr_t)xen_user_exit;	/* still CPL 3: the #UD there ends the call */
	f->rdi = (uint64_t)value;
}

/* ---- 4 KiB window at 8 GiB ------------------------------------------------------------------ */
static uint64_t window_pd[512] __attribute__((aligned(4096)));
static uint64_t window_pt[512] __attribute__((aligned(4096)));

void *xen_map_4k(unsigned slot, uint64_t paddr)
{
	if (slot >= 512)
		kit_fail("xen_map_4k: slot %u", slot);
	uint64_t *pml4e = pt_entry_ptr(read_cr3(), 0);
	*pml4e |= 4;
	uint64_t *pdpte = pt_entry_ptr(*pml4e, XEN_KIT_VA_WINDOW >> 30);
	*pdpte = (uintptr_t)window_pd | 7;
	window_pd[0] = (uintptr_t)window_pt | 7;
	window_pt[slot] = (paddr & ~0xfffULL) | 7;
	flush_tlb();
	return (void *)(uintptr_t)(XEN_KIT_VA_WINDOW + slot * 4096ULL);
}

void xen_unmap_4k(unsigned slot)
{
	if (slot < 512)
		window_pt[slot] = 0;
	flush_tlb();
}

uint64_t xen_unbacked_paddr(void)
{
	const struct hvm_start_info *si = kit_start_info();
	uint64_t top = 0;

	if (!si || si->version < 1 || !si->memmap_paddr)
		return 0x30000000;
	const struct hvm_memmap_table_entry *e = (const void *)(uintptr_t)si->memmap_paddr;
	for (uint32_t i = 0; i < si->memmap_entries; i++)
		if (e[i].type == 1 && e[i].addr + e[i].size > top && e[i].addr < 0xc0000000ULL)
			top = e[i].addr + e[i].size;
	uint64_t a = ((top + 0x1fffff) & ~0x1fffffULL) + 0x200000;
	for (bool moved = true; moved;) {	/* step over any memmap entry (reserved too) */
		moved = false;
		for (uint32_t i = 0; i < si->memmap_entries; i++)
			if (a + 0x200000 > e[i].addr && a < e[i].addr + e[i].size) {
				a = (e[i].addr + e[i].size + 0x1fffff) & ~0x1fffffULL;
				moved = true;
			}
	}
	return a < 0xc0000000ULL ? a : 0x30000000ULL;
}

/* ---- Reporting ----------------------------------------------------------------------------- */
const char *xen_strerror(long rc)
{
	static const struct { long e; const char *s; } t[] = {
		{ 0, "0" }, { -XEN_EPERM, "-EPERM" }, { -XEN_ENOENT, "-ENOENT" },
		{ -XEN_ESRCH, "-ESRCH" }, { -XEN_EFAULT, "-EFAULT" }, { -XEN_EINVAL, "-EINVAL" },
		{ -XEN_EEXIST, "-EEXIST" }, { -XEN_ENOSYS, "-ENOSYS" }, { -XEN_EOPNOTSUPP, "-EOPNOTSUPP" },
		{ -XEN_ENOSPC, "-ENOSPC" }, { -XEN_ETIME, "-ETIME" }, { -XEN_EBUSY, "-EBUSY" },
		{ -XEN_EACCES, "-EACCES" }, { -XEN_ENODATA, "-ENODATA" }, { -XEN_ENOBUFS, "-ENOBUFS" },
		{ -XEN_EDOM, "-EDOM" },
	};
	for (unsigned i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (t[i].e == rc)
			return t[i].s;
	return rc < 0 ? "-E?" : "+";
}

uint64_t xen_cmdline_u64(const char *key, uint64_t def)
{
	const char *c = kit_cmdline();
	size_t n = strlen(key);

	for (const char *p = c; *p; p++) {
		if ((p == c || p[-1] == ' ') && !memcmp(p, key, n) && p[n] == '=') {
			uint64_t v = 0;
			const char *q = p + n + 1;
			if (q[0] == '0' && (q[1] == 'x' || q[1] == 'X')) {
				for (q += 2;; q++) {
					int d = (*q >= '0' && *q <= '9') ? *q - '0' :
						(*q >= 'a' && *q <= 'f') ? *q - 'a' + 10 :
						(*q >= 'A' && *q <= 'F') ? *q - 'A' + 10 : -1;
					if (d < 0)
						break;
					v = v * 16 + d;
				}
			} else {
				for (; *q >= '0' && *q <= '9'; q++)
					v = v * 10 + (*q - '0');
			}
			return v;
		}
	}
	return def;
}

/* ---- Test scaffolding --------------------------------------------------------------------- */
void xen_check_failed(const char *file, int line, const char *fmt, ...)
{
	char msg[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	printf("FAIL: %s: %s (%s:%d)\n", xen_test_name, msg, file, line);
	if (!xen_keep_going)
		kit_exit(1);
	xen_failures++;
}

void xen_pass(void)
{
	if (xen_failures) {
		printf("%s: %d check(s) failed\n", xen_test_name, xen_failures);
		kit_exit(1);
	}
	kit_pass();
}

void xen_test_start(const char *name)
{
	xen_test_name = name;
	xen_init();
	xen_map_shared_info();
	xen_wait_init();
}

void xen_use_upcall_vector(void)
{
	kit_set_handler(XEN_KIT_UPCALL_VECTOR, xen_upcall_isr_eoi);
	long rc = xen_set_upcall_vector(xen_vcpu_id(), XEN_KIT_UPCALL_VECTOR);
	if (rc)
		kit_fail("%s: HVMOP_set_evtchn_upcall_vector(vcpu %u, %#x) = %ld", xen_test_name,
			 xen_vcpu_id(), XEN_KIT_UPCALL_VECTOR, rc);
	XEN_WAIT_UNTIL(false, xen_now() + XEN_MS(2));	/* take Xen's registration upcall, if any */
}
