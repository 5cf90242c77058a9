/*
 * xen_kit_selftest: the Xen library's non-Xen machinery, on any VMM (no
 * --xen needed): CPL 3 calls through the hypercall-style trampoline and back
 * through a #UD, a ring-3 fault taken on the TSS RSP0 stack, IOPL 3 port I/O
 * from ring 3, 32-bit compatibility-mode calls with the Xen 32-bit register
 * ABI, and 4 KiB mappings whose virtual pages are not physically contiguous.
 */
#include "xen.h"

static volatile int io_gp;

static void user_io_gp(struct kit_frame *f)
{
	if ((f->cs & 3) != 3)
		kit_fail("#GP in ring 0 at %#lx", f->rip);
	io_gp++;
	kit_try_resume(f);
}

static long user_fn(void *arg)
{
	uint16_t cs, ss;
	asm volatile("mov %%cs, %0; mov %%ss, %1" : "=r"(cs), "=r"(ss));
	/* Port I/O at CPL 3 with IOPL 3 (what a port-I/O hypercall stub needs). */
	KIT_TRY_ASM("movw %w0, %%dx\n\tinb %%dx, %%al", "r"((uint16_t)(KIT_COM1 + 5)));
	return ((long)(cs & 3) << 16) | ((long)(ss & 3) << 8) | ((long)(uintptr_t)arg << 32);
}

static long user_hlt(void *arg)
{
	(void)arg;
	asm volatile("hlt");		/* #GP at CPL 3 */
	return 1;
}

static volatile int gp_count;
static volatile uint64_t gp_cs, gp_rsp_ok;
extern uint8_t xen_user_stack[];

static void gp_handler(struct kit_frame *f)
{
	uint64_t rsp;
	asm volatile("mov %%rsp, %0" : "=r"(rsp));
	gp_count++;
	gp_cs = f->cs;
	/* Entered from CPL 3: the CPU switched to TSS.RSP0, away from the user stack. */
	gp_rsp_ok = !(rsp >= (uintptr_t)xen_user_stack && rsp < (uintptr_t)xen_user_stack + 8192);
	xen_user_fault_return(f, -13);
}

void kit_main(void)
{
	xen_test_name = "xen_kit_selftest";
	printf("xen_kit_selftest: CPL 3, compat mode and 4K mappings (no Xen needed)\n");

	/* CPL 3 round trip, twice (the second reuses the GDT/TSS setup). */
	kit_set_handler(13, user_io_gp);
	for (int i = 1; i <= 2; i++) {
		long r = xen_user_call(user_fn, (void *)(uintptr_t)(0x40 + i));
		XEN_CHECK((r & ~0xffffL) == (((long)(0x40 + i) << 32) | (3 << 16)) && ((r >> 8) & 3) == 3,
			  "user_fn returned %#lx\n", r);
	}
	kit_set_handler(13, NULL);
	uint16_t cs, ds;
	asm volatile("mov %%cs, %0; mov %%ds, %1" : "=r"(cs), "=r"(ds));
	XEN_CHECK(cs == KIT_CS64 && ds == KIT_DS, "back in ring 0 with cs %#x ds %#x\n", cs, ds);
	printf("xen_kit_selftest: user call: CPL 3 (RPL of CS and SS), back in ring 0 via #UD ok\n");
	/* Informational: real hardware and KVM honour IOPL 3; PVM runs ring 3 natively with IOPL 0. */
	printf("xen_kit_selftest: port I/O at CPL 3 with IOPL 3: %s\n",
	       io_gp ? "#GP (this host ignores the guest's IOPL)" : "allowed");

	/* A #GP in ring 3 arrives on the TSS RSP0 stack and can end the user call. */
	kit_set_handler(13, gp_handler);
	long r = xen_user_call(user_hlt, 0);
	kit_set_handler(13, NULL);
	XEN_CHECK(r == -13 && gp_count == 1 && (gp_cs & 3) == 3, "r %ld gp %d cs %#lx\n", r, gp_count, gp_cs);
	XEN_CHECK(gp_rsp_ok, "ring-3 fault was not switched to the TSS RSP0 stack\n");
	printf("xen_kit_selftest: ring-3 hlt -> #GP from CS %#lx, handled, user call ended ok\n", gp_cs);

	/* Compatibility mode with the 32-bit hypercall register ABI. */
	uint32_t v = xen_compat_call((uint32_t)(uintptr_t)xen_compat_selftest_fn, 1, 10, 100, 1000, 10000);
	XEN_CHECK(v == 1 + 20 + 300 + 4000 + 50000, "compat call returned %#x\n", v);
	v = xen_compat_call((uint32_t)(uintptr_t)xen_compat_selftest_fn, 7, 0, 0, 0, 0);
	XEN_CHECK(v == 7, "compat call returned %#x\n", v);
	asm volatile("mov %%cs, %0; mov %%ds, %1" : "=r"(cs), "=r"(ds));
	XEN_CHECK(cs == KIT_CS64 && ds == KIT_DS, "after compat: cs %#x ds %#x\n", cs, ds);
	printf("xen_kit_selftest: compat call: EBX..EDI in, EAX out, ran in 32-bit mode ok\n");

	/* Two virtual pages back to back on two non-adjacent physical pages. */
	uint8_t *a = xen_scratch_page(3), *b = xen_scratch_page(1);
	memset(a, 0xaa, 4096);
	memset(b, 0xbb, 4096);
	uint8_t *va = xen_map_4k(10, (uintptr_t)a);
	uint8_t *vb = xen_map_4k(11, (uintptr_t)b);
	XEN_CHECK(vb == va + 4096, "window slots not adjacent\n");
	volatile uint64_t *straddle = (volatile uint64_t *)(va + 4092);
	*straddle = 0x1122334455667788ULL;
	XEN_CHECK(*(volatile uint32_t *)(a + 4092) == 0x55667788 && *(volatile uint32_t *)b == 0x11223344,
		  "straddling write landed at %#x / %#x\n", *(uint32_t *)(a + 4092), *(uint32_t *)b);
	XEN_CHECK(b[4] == 0xbb && a[4091] == 0xaa, "neighbours clobbered\n");
	xen_unmap_4k(10);
	xen_unmap_4k(11);
	printf("xen_kit_selftest: 4K window at %#llx maps non-contiguous pages ok\n",
	       (unsigned long long)XEN_KIT_VA_WINDOW);
	printf("xen_kit_selftest: unbacked paddr for -EFAULT tests: %#llx\n",
	       (unsigned long long)xen_unbacked_paddr());
	kit_pass();
}
