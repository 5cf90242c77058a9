/* reset: asks the i8042 for a system reset; the VMM should stop the VM. */
#include "kit.h"

void kit_main(void)
{
	printf("reset: requesting i8042 reset\n");
	outb(KIT_I8042_CMD, 0xfe);
	for (volatile int i = 0; i < 100000; i++)	/* give the VMM time */
		;
	kit_fail("still running after the reset request");
}
