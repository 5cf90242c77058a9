/*
 * kit.h - the whole API of the bare-metal test-guest kit.
 *
 * A test is one file, tests/NAME.c, that includes "kit.h" and defines
 * `void kit_main(void)`.  It runs on the BSP in 64-bit long mode, ring 0,
 * interrupts disabled, first 4 GiB identity mapped, IDT and COM1 ready.
 * Returning from kit_main() counts as kit_pass().
 *
 * Note the argument order of the port helpers: outb(port, value).
 */
#ifndef KIT_H
#define KIT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kit_asm.h"

#define __noreturn	__attribute__((noreturn))
#define __printf(a, b)	__attribute__((format(printf, a, b)))
#define barrier()	asm volatile("" ::: "memory")

/* ---- Ports and addresses provided by the VMM ---------------------------- */
#define KIT_COM1		0x3f8	/* 16550 UART, IRQ 4 */
#define KIT_DEBUGCON		0xe9	/* byte writes go to the console */
#define KIT_EXIT_PORT		0x501	/* write V: VMM exits with code V & 0xff */
#define KIT_TESTDEV		0x510	/* MSI / GSI injection, see testdev_*() */
#define KIT_I8042_CMD		0x64	/* write 0xfe: system reset */
#define KIT_LAPIC_BASE		0xfee00000UL
#define KIT_MSI_ADDR(dest)	(0xfee00000UL | ((uint64_t)(dest) << 12))

/* ---- The test's entry point ------------------------------------------------ */
void kit_main(void);

/* ---- Port I/O, MSRs, CPUID, misc instructions ------------------------------ */
static inline void outb(uint16_t port, uint8_t v)  { asm volatile("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { asm volatile("outw %0, %1" :: "a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { asm volatile("outl %0, %1" :: "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port)  { uint8_t v;  asm volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint16_t inw(uint16_t port) { uint16_t v; asm volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint32_t inl(uint16_t port) { uint32_t v; asm volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static inline uint64_t rdmsr(uint32_t msr)
{
	uint32_t lo, hi;
	asm volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return lo | ((uint64_t)hi << 32);
}
static inline void wrmsr(uint32_t msr, uint64_t v)
{
	asm volatile("wrmsr" :: "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)) : "memory");
}

struct cpuid { uint32_t a, b, c, d; };
static inline struct cpuid cpuid(uint32_t leaf, uint32_t subleaf)
{
	struct cpuid r;
	asm volatile("cpuid" : "=a"(r.a), "=b"(r.b), "=c"(r.c), "=d"(r.d) : "a"(leaf), "c"(subleaf));
	return r;
}

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	asm volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return lo | ((uint64_t)hi << 32);
}

static inline void cli(void) { asm volatile("cli" ::: "memory"); }
static inline void sti(void) { asm volatile("sti" ::: "memory"); }
static inline void hlt(void) { asm volatile("hlt" ::: "memory"); }
/* sti's one-instruction shadow guarantees no interrupt is lost before hlt. */
static inline void safe_halt(void) { asm volatile("sti; hlt" ::: "memory"); }

static inline uint64_t read_cr2(void) { uint64_t v; asm volatile("mov %%cr2, %0" : "=r"(v)); return v; }
static inline uint64_t read_cr3(void) { uint64_t v; asm volatile("mov %%cr3, %0" : "=r"(v)); return v; }

/*
 * Sleep in `sti; hlt` until COND is true or MAX_HALTS interrupts arrived.
 * The condition is checked with interrupts off so a wake-up cannot be lost.
 * Evaluates to COND's final truth value; interrupts are enabled afterwards.
 * NB: if no interrupt ever comes, hlt never returns (the VMM's --timeout is
 * the backstop).
 */
#define KIT_WAIT_FOR(cond, max_halts) ({				\
	unsigned long __halts = 0;					\
	bool __ok;							\
	cli();								\
	while (!(__ok = (cond)) && __halts++ < (max_halts)) {		\
		safe_halt();						\
		cli();							\
	}								\
	sti();								\
	__ok;								\
})

/* Busy-wait (no interrupts needed) until COND or TSC_CYCLES elapsed. */
#define KIT_SPIN_UNTIL(cond, tsc_cycles) ({				\
	uint64_t __end = rdtsc() + (tsc_cycles);			\
	bool __ok;							\
	while (!(__ok = (cond)) && rdtsc() < __end)			\
		barrier();						\
	__ok;								\
})

/* ---- Console and exit --------------------------------------------------------- */
int printf(const char *fmt, ...) __printf(1, 2);
int vprintf(const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __printf(3, 4);
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int puts(const char *s);			/* appends '\n' */
void serial_putc(char c);			/* COM1, polls LSR.THRE */
void kit_debugcon_putc(char c);			/* port 0xe9 */

void kit_exit(int code) __noreturn;		/* debug-exit port, then cli; hlt */
void kit_pass(void) __noreturn;			/* "PASS\n", exit 0 */
void kit_fail(const char *fmt, ...) __noreturn __printf(1, 2);	/* "FAIL: msg\n", exit 1 */

#define KIT_ASSERT(cond) do {						\
	if (!(cond))							\
		kit_fail("%s:%d: assertion failed: %s",			\
			 __FILE__, __LINE__, #cond);			\
} while (0)

/* ---- Interrupts / exceptions ------------------------------------------------------ */
/* Saved state; the handler may modify it (e.g. rip) before the iretq. */
struct kit_frame {
	uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
	uint64_t rbp, rdi, rsi, rdx, rcx, rbx, rax;
	uint64_t vector, error_code;		/* error_code is 0 if none */
	uint64_t rip, cs, rflags, rsp, ss;	/* pushed by the CPU */
};
typedef void (*kit_handler_t)(struct kit_frame *frame);

/*
 * Install FN for VECTOR (NULL restores the default).  The handler table and
 * IDT are shared by all CPUs.  Handlers for vectors >= 32 must lapic_eoi().
 * Defaults: exception -> "EXCEPTION vector=..." + exit 3; other vector ->
 * "UNEXPECTED INTERRUPT vector=..." + exit 4 (except the spurious vector 0xff,
 * which is ignored).
 */
void kit_set_handler(int vector, kit_handler_t fn);

/*
 * Run INSN (an asm string, operands %0.. from the varargs input list) so
 * that a fault handler can resume right after it with kit_try_resume(f).
 * rax, rcx, rdx and r11 are clobbered and may be used by INSN.  The resume
 * point is a single global: use from one CPU at a time.
 *   KIT_TRY_ASM("ud2");
 *   KIT_TRY_ASM("movq (%0), %%rax", "r"(addr));
 */
extern volatile uint64_t kit_try_rip;
#define KIT_TRY_ASM(insn, ...)						\
	asm volatile("leaq 1f(%%rip), %%r11\n\t"			\
		     "movq %%r11, kit_try_rip(%%rip)\n\t"		\
		     insn "\n"						\
		     "1:" :: __VA_ARGS__ : "rax", "rcx", "rdx", "r11", "memory", "cc")
static inline void kit_try_resume(struct kit_frame *f) { f->rip = kit_try_rip; }

/* ---- Local APIC (xAPIC MMIO, or x2APIC MSRs after x2apic_enable()) ------------------ */
#define APIC_ID		0x020
#define APIC_TPR	0x080
#define APIC_EOI	0x0b0
#define APIC_SVR	0x0f0
#define APIC_ICR	0x300	/* x2APIC: one 64-bit MSR 0x830 */
#define APIC_ICR2	0x310
#define APIC_LVTT	0x320
#define APIC_TMICT	0x380
#define APIC_TMCCT	0x390
#define APIC_TDCR	0x3e0
#define APIC_LVT0	0x350
#define LVT_EXTINT	0x700	/* LVT delivery mode ExtINT: the 8259's INTR */

/* ---- 8259 pair and ELCR (ports as on a PC) ----------------------------------------------- */
#define PIC1_CMD	0x20
#define PIC1_DATA	0x21
#define PIC2_CMD	0xa0
#define PIC2_DATA	0xa1
#define ELCR1		0x4d0
#define ELCR2		0x4d1
#define PIC_EOI		0x20	/* OCW2 non-specific EOI */

extern volatile bool kit_x2apic_mode;	/* global: all CPUs use the same mode */
uint32_t lapic_read(unsigned reg);	/* reg = xAPIC offset, e.g. APIC_SVR */
void lapic_write(unsigned reg, uint32_t v);
void lapic_enable(void);		/* SVR = 0x1ff (enabled, spurious 0xff), TPR = 0 */
uint32_t lapic_id(void);
void lapic_eoi(void);
void lapic_send_ipi(uint32_t dest_apic_id, uint8_t vector);	/* fixed, physical */
void lapic_send_init(uint32_t dest_apic_id);
void lapic_send_sipi(uint32_t dest_apic_id, uint8_t page);	/* starts at page << 12 */
/* divide: 1, 2, 4, ..., 128.  KVM's APIC timer counts at 1 GHz / divide. */
void lapic_timer_periodic(uint8_t vector, unsigned divide, uint32_t initial_count);
void lapic_timer_oneshot(uint8_t vector, unsigned divide, uint32_t count);
void lapic_timer_stop(void);
uint32_t lapic_timer_current(void);
bool cpu_has_x2apic(void);
/* Switch the calling CPU to x2APIC mode; APs started later switch too. -1 if unsupported. */
int x2apic_enable(void);

/* ---- SMP ------------------------------------------------------------------------------- */
/*
 * Boot the CPU with APIC id APIC_ID (< KIT_MAX_CPUS): INIT, SIPI (and a
 * second SIPI if needed) to the trampoline at 0x8000.  The AP enters long
 * mode with the shared GDT/IDT/page tables and its own stack, then calls FN
 * with interrupts disabled (LAPIC not yet software-enabled).  If FN returns
 * the AP halts forever.  Returns 0 once the AP runs, -1 on timeout.
 * Start APs one at a time (this function waits for each).
 */
int kit_start_ap(int apic_id, void (*fn)(void));
static inline int smp_processor_id(void) { return (int)lapic_id(); }

/* ---- testdev (0x510) -------------------------------------------------------------------- */
static inline void testdev_send_msi(uint64_t addr, uint32_t data)
{
	outl(KIT_TESTDEV + 0x0, (uint32_t)addr);
	outl(KIT_TESTDEV + 0x4, (uint32_t)(addr >> 32));
	outl(KIT_TESTDEV + 0x8, data);		/* this write injects the MSI */
}
static inline void testdev_set_gsi(int gsi, int level)
{
	outl(KIT_TESTDEV + 0xc, (uint32_t)gsi | (level ? 1u << 31 : 0));
}

/* ---- PVH start info (Xen public/arch-x86/hvm/start_info.h) -------------------------------- */
#define HVM_START_MAGIC_VALUE 0x336ec578
struct hvm_start_info {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;
	uint32_t nr_modules;
	uint64_t modlist_paddr;
	uint64_t cmdline_paddr;
	uint64_t rsdp_paddr;
	uint64_t memmap_paddr;		/* version >= 1 */
	uint32_t memmap_entries;	/* version >= 1 */
	uint32_t reserved;
};
struct hvm_memmap_table_entry {
	uint64_t addr, size;
	uint32_t type, reserved;	/* type 1 = RAM (E820 numbering) */
};
/* Copies taken at boot (the trampoline may overwrite low memory later). */
const struct hvm_start_info *kit_start_info(void);	/* NULL if magic was bad */
const char *kit_cmdline(void);				/* "" if none */
bool kit_cmdline_has(const char *word);			/* WORD is one of its space-separated words */

/* ---- Freestanding libc bits ------------------------------------------------------------------- */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);

#endif /* KIT_H */
