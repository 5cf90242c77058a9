/* snapshot_counter: counts LAPIC timer ticks and prints the count every 25 ticks, with a
 * checksum of memory it keeps writing, until 2500 ticks.  A snapshot taken mid-run and
 * restored in another VMM process must continue the count (no second "boot" line, no count
 * going back) with the checksum intact: registers, the LAPIC timer, memory, the UART. */
#include "kit.h"

#define TIMER_VECTOR 0x30
#define LAST 2500		/* or ticks=N on the command line */
#define PAGES 16

static volatile unsigned ticks;
static uint8_t area[PAGES * 4096] __attribute__((aligned(4096)));

static void timer_handler(struct kit_frame *f)
{
	(void)f;
	ticks++;
	lapic_eoi();
}

void kit_main(void)
{
	unsigned printed = 0, sum = 0, expect = 0, last = LAST;
	const char *arg = kit_cmdline();

	for (; *arg; arg++) {
		if (!memcmp(arg, "ticks=", 6)) {
			last = 0;
			for (arg += 6; *arg >= '0' && *arg <= '9'; arg++)
				last = last * 10 + (unsigned)(*arg - '0');
			break;
		}
	}

	printf("snapshot_counter: boot\n");
	kit_set_handler(TIMER_VECTOR, timer_handler);
	lapic_enable();
	lapic_timer_periodic(TIMER_VECTOR, 16, 200000);	/* ~3.2 ms */
	while (printed < last) {
		unsigned t = ticks;
		if (t >= printed + 25) {
			printed = t - t % 25;
			/* one byte per page, a running value: memory must survive too */
			area[(printed / 25 % PAGES) * 4096 + 7] = (uint8_t)printed;
			sum += (uint8_t)printed;
			expect = 0;
			for (int p = 0; p < PAGES; p++)
				expect += area[p * 4096 + 7];
			printf("count=%u mem=%u\n", printed, expect);
		}
		safe_halt();
	}
	(void)sum;
	lapic_timer_stop();
	printf("snapshot_counter: done at %u\n", printed);
	kit_pass();
}
