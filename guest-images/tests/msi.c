/* msi: testdev injects MSIs (vector 0x41, then 0x42); each arrives exactly once. */
#include "kit.h"

static volatile int count[256];

static void msi_handler(struct kit_frame *f)
{
	count[f->vector]++;
	lapic_eoi();
}

static void send_and_wait(uint8_t vector)
{
	kit_set_handler(vector, msi_handler);
	testdev_send_msi(KIT_MSI_ADDR(lapic_id()), vector);	/* fixed, edge */
	if (!KIT_WAIT_FOR(count[vector] > 0, 1000))
		kit_fail("MSI vector %#x not delivered", vector);
	/* Give a duplicate the chance to show up (IF=1, ~20k instructions). */
	for (volatile int i = 0; i < 5000; i++)
		;
	if (count[vector] != 1)
		kit_fail("MSI vector %#x delivered %d times", vector, count[vector]);
	printf("msi: vector %#x delivered once\n", vector);
}

void kit_main(void)
{
	printf("msi: testdev MSI injection\n");
	lapic_enable();
	send_and_wait(0x41);
	send_and_wait(0x42);
	kit_pass();
}
