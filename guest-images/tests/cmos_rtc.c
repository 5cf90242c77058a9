/*
 * cmos_rtc: the CMOS RTC at 0x70/0x71 (devices/rtc.py).  Status registers as firmware
 * leaves them (A 0x26, B 24-hour BCD, D "valid RAM and time"); the time within 30 s of
 * cmdline "now=<unix seconds>"; the same time in binary and in 12-hour mode; setting the
 * year under SET moves the clock; register C reads 0; CMOS RAM keeps what is written.
 */
#include "kit.h"
#include "xen.h"		/* xen_cmdline_u64 */

#define RTC_INDEX 0x70
#define RTC_DATA 0x71

#define CHECK(c, ...) do { if (!(c)) kit_fail(__VA_ARGS__); } while (0)

static uint8_t cmos(uint8_t reg) { outb(RTC_INDEX, reg); return inb(RTC_DATA); }
static void cmos_w(uint8_t reg, uint8_t v) { outb(RTC_INDEX, reg); outb(RTC_DATA, v); }
static unsigned dec(uint8_t v, int binary) { return binary ? v : (v >> 4) * 10 + (v & 15); }

/* Days since 1970-01-01 (H. Hinnant's days_from_civil). */
static long days_from_civil(long y, unsigned m, unsigned d)
{
	y -= m <= 2;
	long era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (long)doe - 719468;
}

static long read_unix(int binary)
{
	unsigned s = dec(cmos(0), binary), mi = dec(cmos(2), binary), h = dec(cmos(4), binary);
	unsigned d = dec(cmos(7), binary), mo = dec(cmos(8), binary), y = dec(cmos(9), binary);
	unsigned c = dec(cmos(0x32), binary);
	return days_from_civil(c * 100 + y, mo, d) * 86400 + h * 3600 + mi * 60 + s;
}

void kit_main(void)
{
	printf("cmos_rtc: CMOS RTC at 0x70/0x71\n");
	/* UIP (bit 7) is set for the last 2 ms of every second (the update cycle): mask it. */
	uint8_t a = cmos(0x0A);
	CHECK((a & 0x7F) == 0x26, "register A %#x", a);
	CHECK(cmos(0x0B) == 0x02, "register B %#x (want 24-hour BCD)", cmos(0x0B));
	CHECK(cmos(0x0D) == 0x80, "register D %#x", cmos(0x0D));
	CHECK(cmos(0x0C) == 0, "register C %#x", cmos(0x0C));

	long now = (long)xen_cmdline_u64("now", 0), t = read_unix(0);
	CHECK(now > 0 && t >= now - 2 && t <= now + 30, "RTC says %ld, launched at %ld", t, now);
	printf("cmos_rtc: BCD time %ld s after launch ok\n", t - now);

	cmos_w(0x0B, 0x06);				/* binary, 24-hour */
	long tb = read_unix(1);
	CHECK(tb >= t && tb <= t + 5, "binary time %ld vs BCD %ld", tb, t);
	uint8_t h24 = cmos(4);
	cmos_w(0x0B, 0x04);				/* binary, 12-hour */
	uint8_t h12 = cmos(4);
	unsigned want = h24 % 12 ? h24 % 12 : 12;
	CHECK((h12 & 0x7F) == want && !!(h12 & 0x80) == (h24 >= 12), "12-hour register %#x for hour %u",
	      h12, h24);
	printf("cmos_rtc: binary and 12-hour modes ok\n");

	/* Set the year under SET: the clock moves by a year (365 or 366 days). */
	cmos_w(0x0B, 0x86);				/* SET, binary, 24-hour */
	uint8_t y = cmos(9);
	cmos_w(9, (uint8_t)(y + 1));
	cmos_w(0x0B, 0x06);
	long moved = read_unix(1) - tb;
	CHECK(moved >= 365L * 86400 && moved <= 366L * 86400 + 10, "year+1 moved the clock by %ld s", moved);
	cmos_w(0x0B, 0x86);
	cmos_w(9, y);
	cmos_w(0x0B, 0x02);				/* back to BCD, 24-hour */
	long back = read_unix(0);
	CHECK(back >= t && back <= t + 10, "restored clock %ld vs %ld", back, t);
	printf("cmos_rtc: setting the year moved the clock by %ld days, and back ok\n", moved / 86400);

	cmos_w(0x40, 0xA5);
	CHECK(cmos(0x40) == 0xA5, "CMOS RAM 0x40 reads %#x", cmos(0x40));
	kit_pass();
}
