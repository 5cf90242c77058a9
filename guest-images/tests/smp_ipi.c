/*
 * smp_ipi: needs 2 vCPUs (AP = APIC id 1).  BSP starts the AP, sends it IPI
 * 0x50, the AP answers with IPI 0x51.  smp_ipi_x2apic.c reuses this file
 * with SMP_IPI_X2APIC=1.
 */
#include "kit.h"

#ifndef SMP_IPI_X2APIC
#define SMP_IPI_X2APIC 0
#endif
#define AP_ID		1
#define AP_VECTOR	0x50
#define BSP_VECTOR	0x51

static volatile int ap_online, ap_got_ipi, bsp_got_ipi;
static volatile uint32_t bsp_id;

static void ap_handler(struct kit_frame *f)  { (void)f; ap_got_ipi = 1; lapic_eoi(); }
static void bsp_handler(struct kit_frame *f) { (void)f; bsp_got_ipi = 1; lapic_eoi(); }

static void ap_main(void)
{
	lapic_enable();
	__atomic_store_n(&ap_online, lapic_id() == AP_ID ? 1 : -1, __ATOMIC_SEQ_CST);
	if (!KIT_WAIT_FOR(ap_got_ipi, 1000))
		kit_fail("AP: no IPI from BSP");
	lapic_send_ipi(bsp_id, BSP_VECTOR);
}

void kit_main(void)
{
	printf("smp_ipi: BSP <-> AP IPI ping-pong%s\n", SMP_IPI_X2APIC ? " (x2APIC)" : "");
	if (SMP_IPI_X2APIC && x2apic_enable() != 0)
		kit_fail("x2APIC not supported");
	lapic_enable();
	bsp_id = lapic_id();
	kit_set_handler(AP_VECTOR, ap_handler);
	kit_set_handler(BSP_VECTOR, bsp_handler);

	if (kit_start_ap(AP_ID, ap_main) != 0)
		kit_fail("AP %d did not start", AP_ID);
	if (!KIT_SPIN_UNTIL(ap_online, 4000000000ULL))
		kit_fail("AP did not come online");
	KIT_ASSERT(ap_online == 1);		/* AP saw its own APIC id */
	printf("AP online\n");

	lapic_send_ipi(AP_ID, AP_VECTOR);
	if (!KIT_WAIT_FOR(bsp_got_ipi, 1000))
		kit_fail("BSP: no IPI from AP");
	printf("BSP got IPI from AP\n");
	kit_pass();
}
