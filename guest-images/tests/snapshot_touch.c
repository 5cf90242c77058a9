/* snapshot_touch: writes a non-zero byte into every 4 KiB page of touch_mb MiB (cmdline,
 * default 64) from 16 MiB up, prints "touched N MiB", then halts with interrupts on until
 * the VMM ends it: a guest for bench/snapshot.py (the file should be near the touched size). */
#include "kit.h"

void kit_main(void)
{
	uint64_t mb = 64;
	const char *arg = kit_cmdline();

	for (; *arg; arg++) {
		if (!memcmp(arg, "touch_mb=", 9)) {
			mb = 0;
			for (arg += 9; *arg >= '0' && *arg <= '9'; arg++)
				mb = mb * 10 + (uint64_t)(*arg - '0');
			break;
		}
	}
	volatile uint8_t *p = (volatile uint8_t *)(16ull << 20);
	for (uint64_t off = 0; off < (mb << 20); off += 4096)
		p[off] = (uint8_t)(off >> 12) | 1;
	printf("touched %lu MiB\n", (unsigned long)mb);
	for (;;)
		safe_halt();
}
