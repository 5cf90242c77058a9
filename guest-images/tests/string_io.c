/*
 * string_io: rep outs/ins (one exit carries many elements) and unassigned
 * MMIO/PIO (reads return all-ones, writes are dropped).
 */
#include "kit.h"

void kit_main(void)
{
	static const char msg[] = "rep-outsb-to-debugcon\n";
	static uint8_t in[8];
	static uint16_t in16[4];
	unsigned long n = sizeof(msg) - 1;
	const char *p = msg;

	printf("string_io: rep outsb/insb, unassigned ports and MMIO\n");
	asm volatile("rep outsb" : "+S"(p), "+c"(n) : "d"(KIT_DEBUGCON) : "memory");
	KIT_ASSERT(n == 0);

	uint8_t *d = in;
	n = sizeof(in);
	asm volatile("rep insb" : "+D"(d), "+c"(n) : "d"(KIT_DEBUGCON) : "memory");
	for (unsigned i = 0; i < sizeof(in); i++)
		KIT_ASSERT(in[i] == 0xe9);		/* Bochs: reading 0xe9 gives 0xe9 */

	uint16_t *d16 = in16;
	n = 4;
	asm volatile("rep insw" : "+D"(d16), "+c"(n) : "d"(0x2f0) : "memory");
	for (unsigned i = 0; i < 4; i++)
		KIT_ASSERT(in16[i] == 0xffff);		/* unassigned port */
	KIT_ASSERT(inl(0x2f4) == 0xffffffff);
	outl(0x2f4, 0x12345678);			/* dropped, no crash */

	volatile uint32_t *mmio = (volatile uint32_t *)0xd0000000UL;	/* PCI hole, nothing there */
	mmio[0] = 0xdeadbeef;
	KIT_ASSERT(mmio[0] == 0xffffffff);
	KIT_ASSERT(*(volatile uint8_t *)0xd0000003UL == 0xff);
	printf("string_io: all-ones from unassigned PIO and MMIO\n");
	kit_pass();
}
