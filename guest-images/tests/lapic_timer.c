/* lapic_timer: periodic LAPIC timer on vector 0x30 fires at least 5 times. */
#include "kit.h"

#define TIMER_VECTOR 0x30

static volatile int ticks;

static void timer_handler(struct kit_frame *f)
{
	(void)f;
	ticks++;
	lapic_eoi();
}

void kit_main(void)
{
	printf("lapic_timer: periodic timer, vector %#x\n", TIMER_VECTOR);
	kit_set_handler(TIMER_VECTOR, timer_handler);
	lapic_enable();
	/* KVM: 1 GHz / 16 * 200000 = 3.2 ms per tick. */
	lapic_timer_periodic(TIMER_VECTOR, 16, 200000);
	if (!KIT_WAIT_FOR(ticks >= 5, 1000))
		kit_fail("only %d timer interrupts", ticks);
	lapic_timer_stop();
	printf("lapic_timer: got 5 ticks\n");
	kit_pass();
}
