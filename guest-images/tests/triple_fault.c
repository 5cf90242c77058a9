/* triple_fault: ud2 with a zero-limit IDT -> #GP -> #DF -> triple fault. */
#include "kit.h"

void kit_main(void)
{
	struct { uint16_t limit; uint64_t base; } __attribute__((packed)) empty = { 0, 0 };

	printf("triple_fault: loading an empty IDT and executing ud2\n");
	cli();
	asm volatile("lidt %0; ud2" :: "m"(empty));
	kit_fail("still running after the triple fault");
}
