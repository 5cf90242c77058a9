/*
 * unhandled_interrupt: a self-IPI on vector 0x60 without a handler.
 * Expected output "UNEXPECTED INTERRUPT vector=96" and exit code 4.
 */
#include "kit.h"

void kit_main(void)
{
	printf("unhandled_interrupt: self-IPI on vector 0x60 without a handler\n");
	lapic_enable();
	lapic_send_ipi(lapic_id(), 0x60);
	KIT_WAIT_FOR(false, 10);
	kit_fail("interrupt not delivered");
}
