/* printf: self-test of the kit's formatter via snprintf. */
#include "kit.h"

#define CHECK(expect, ...) do {						\
	char buf[64];							\
	snprintf(buf, sizeof(buf), __VA_ARGS__);			\
	if (strcmp(buf, expect))					\
		kit_fail("printf(%s) gave \"%s\", want \"%s\"",		\
			 #__VA_ARGS__, buf, expect);			\
} while (0)

void kit_main(void)
{
	char small[4];
	const char *volatile null = 0;	/* hide NULL from -Wformat */

	printf("printf: formatter self-test\n");
	CHECK("42 -7 0", "%d %i %u", 42, -7, 0u);
	CHECK("-2147483648 4294967295", "%d %u", (int)0x80000000, 0xffffffffu);
	CHECK("ff FF 0xff 0", "%x %X %#x %#x", 255, 255, 255, 0);
	CHECK("  7|007|7  |-07", "%3d|%03d|%-3d|%03d", 7, 7, 7, -7);
	CHECK("ffffffffffffffff", "%lx", ~0UL);
	CHECK("18446744073709551615 -9223372036854775808",
	      "%lu %ld", ~0UL, (long)0x8000000000000000UL);
	CHECK("123456789abc", "%llx", 0x123456789abcULL);
	CHECK("0x1000 0x0", "%p %p", (void *)0x1000, (void *)0);
	CHECK("0x0000beef", "%#010x", 0xbeef);
	CHECK("[ab][  ab][ab  ][(null)]", "[%s][%4s][%-4s][%s]", "ab", "ab", "ab", null);
	CHECK("x%y100%", "x%c%c%d%%", '%', 'y', 100);
	KIT_ASSERT(snprintf(small, sizeof(small), "%s", "hello") == 5);
	KIT_ASSERT(strcmp(small, "hel") == 0);
	kit_pass();
}
