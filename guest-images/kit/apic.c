/*
 * Local APIC helpers (xAPIC MMIO or x2APIC MSRs) and AP startup.
 */
#include "kit.h"

#define MSR_APIC_BASE		0x1b
#define APIC_BASE_EXTD		(1u << 10)	/* x2APIC mode */
#define APIC_BASE_EN		(1u << 11)

#define ICR_DM_FIXED		(0u << 8)
#define ICR_DM_INIT		(5u << 8)
#define ICR_DM_STARTUP		(6u << 8)
#define ICR_BUSY		(1u << 12)	/* xAPIC delivery status */
#define ICR_ASSERT		(1u << 14)

#define LVT_MASKED		(1u << 16)
#define LVTT_PERIODIC		(1u << 17)

volatile bool kit_x2apic_mode;

uint32_t lapic_read(unsigned reg)
{
	if (kit_x2apic_mode)
		return (uint32_t)rdmsr(0x800 + (reg >> 4));
	return *(volatile uint32_t *)(KIT_LAPIC_BASE + reg);
}

void lapic_write(unsigned reg, uint32_t v)
{
	if (kit_x2apic_mode)
		wrmsr(0x800 + (reg >> 4), v);
	else
		*(volatile uint32_t *)(KIT_LAPIC_BASE + reg) = v;
}

void lapic_enable(void)
{
	lapic_write(APIC_TPR, 0);
	lapic_write(APIC_SVR, 0x1ff);	/* software enable, spurious vector 0xff */
}

uint32_t lapic_id(void)
{
	uint32_t id = lapic_read(APIC_ID);
	return kit_x2apic_mode ? id : id >> 24;
}

void lapic_eoi(void)
{
	lapic_write(APIC_EOI, 0);
}

static void lapic_icr(uint32_t dest, uint32_t low)
{
	if (kit_x2apic_mode) {
		wrmsr(0x830, ((uint64_t)dest << 32) | low);
		return;
	}
	lapic_write(APIC_ICR2, dest << 24);
	lapic_write(APIC_ICR, low);
	for (int i = 0; i < 100000 && (lapic_read(APIC_ICR) & ICR_BUSY); i++)
		;
}

void lapic_send_ipi(uint32_t dest_apic_id, uint8_t vector)
{
	lapic_icr(dest_apic_id, ICR_ASSERT | ICR_DM_FIXED | vector);
}

void lapic_send_init(uint32_t dest_apic_id)
{
	lapic_icr(dest_apic_id, ICR_ASSERT | ICR_DM_INIT);
}

void lapic_send_sipi(uint32_t dest_apic_id, uint8_t page)
{
	lapic_icr(dest_apic_id, ICR_ASSERT | ICR_DM_STARTUP | page);
}

/* TDCR encoding of divide 1..128 (bits 0,1,3). */
static uint32_t tdcr(unsigned divide)
{
	static const uint8_t enc[8] = { 0xb, 0x0, 0x1, 0x2, 0x3, 0x8, 0x9, 0xa };
	unsigned i = 0;
	while (i < 7 && (1u << i) < divide)
		i++;
	return enc[i];
}

static void lapic_timer(uint32_t lvtt, unsigned divide, uint32_t count)
{
	lapic_write(APIC_TDCR, tdcr(divide));
	lapic_write(APIC_LVTT, lvtt);
	lapic_write(APIC_TMICT, count);		/* starts the timer */
}

void lapic_timer_periodic(uint8_t vector, unsigned divide, uint32_t initial_count)
{
	lapic_timer(LVTT_PERIODIC | vector, divide, initial_count);
}

void lapic_timer_oneshot(uint8_t vector, unsigned divide, uint32_t count)
{
	lapic_timer(vector, divide, count);
}

void lapic_timer_stop(void)
{
	lapic_write(APIC_LVTT, LVT_MASKED);
	lapic_write(APIC_TMICT, 0);
}

uint32_t lapic_timer_current(void)
{
	return lapic_read(APIC_TMCCT);
}

bool cpu_has_x2apic(void)
{
	return cpuid(1, 0).c & (1u << 21);
}

int x2apic_enable(void)
{
	if (!cpu_has_x2apic())
		return -1;
	wrmsr(MSR_APIC_BASE, rdmsr(MSR_APIC_BASE) | APIC_BASE_EN | APIC_BASE_EXTD);
	kit_x2apic_mode = true;
	return 0;
}

/* ---- AP startup ----------------------------------------------------------------
 * The trampoline (boot.S) ends up in ap_start64, which loads kit_ap_stack
 * and calls kit_ap_entry().
 */
extern char kit_trampoline_start[], kit_trampoline_end[];
void kit_load_idt(void);

volatile uint64_t kit_ap_stack;			/* read by boot.S */
static void (*volatile ap_fn)(void);
static volatile int ap_running;
static uint8_t ap_stacks[KIT_MAX_CPUS][KIT_STACK_SIZE] __attribute__((aligned(16)));

void kit_ap_entry(void);
void kit_ap_entry(void)
{
	void (*fn)(void) = ap_fn;

	kit_load_idt();
	if (kit_x2apic_mode)		/* the BSP already switched */
		x2apic_enable();
	__atomic_store_n(&ap_running, 1, __ATOMIC_SEQ_CST);
	fn();
	for (;;) {
		cli();
		hlt();
	}
}

int kit_start_ap(int apic_id, void (*fn)(void))
{
	if (apic_id < 0 || apic_id >= KIT_MAX_CPUS)
		return -1;
	memcpy((void *)KIT_TRAMPOLINE_PADDR, kit_trampoline_start,
	       kit_trampoline_end - kit_trampoline_start);
	kit_ap_stack = (uintptr_t)&ap_stacks[apic_id][KIT_STACK_SIZE];
	ap_fn = fn;
	__atomic_store_n(&ap_running, 0, __ATOMIC_SEQ_CST);

	lapic_send_init(apic_id);
	lapic_send_sipi(apic_id, KIT_TRAMPOLINE_PADDR >> 12);
	if (KIT_SPIN_UNTIL(ap_running, 200000000ULL))
		return 0;
	lapic_send_sipi(apic_id, KIT_TRAMPOLINE_PADDR >> 12);	/* retry once */
	return KIT_SPIN_UNTIL(ap_running, 4000000000ULL) ? 0 : -1;
}
