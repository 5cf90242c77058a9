/*
 * unhandled_exception: ud2 without a handler.  Expected output
 *   EXCEPTION vector=6 error=0 rip=0x...
 * and exit code 3.
 */
#include "kit.h"

void kit_main(void)
{
	printf("unhandled_exception: executing ud2 without a handler\n");
	asm volatile("ud2");
	kit_fail("ud2 returned");
}
