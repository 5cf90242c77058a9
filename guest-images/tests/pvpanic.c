/*
 * pvpanic: QEMU's pvpanic interface at port 0x505 (docs/specs/pvpanic.rst), as Linux's
 * pvpanic driver uses it: read the events the device takes, write PANICKED.  `vmm run`
 * must end with GUEST_PANIC (83); falling through to the debug exit (1) is a failure.
 */
#include "kit.h"

#define PVPANIC_PORT		0x505
#define PVPANIC_PANICKED	(1u << 0)

void kit_main(void)
{
	uint8_t events = inb(PVPANIC_PORT);
	printf("pvpanic: events %#x\n", events);
	if (!(events & PVPANIC_PANICKED))
		kit_fail("pvpanic: the device does not take PANICKED");
	printf("pvpanic: writing PANICKED\n");
	outb(PVPANIC_PORT, PVPANIC_PANICKED);
	kit_fail("pvpanic: still running after PANICKED");
}
