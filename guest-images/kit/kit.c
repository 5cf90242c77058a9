/*
 * Kit runtime: C entry, serial console + printf, exit helpers, IDT and
 * exception dispatch, PVH start info, and the few libc functions gcc needs.
 */
#include "kit.h"

/* ---- Freestanding libc ------------------------------------------------------
 * memset/memcpy use rep string instructions so gcc cannot turn their loops
 * back into calls to themselves.
 */
void *memset(void *d, int c, size_t n)
{
	void *ret = d;
	asm volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
	return ret;
}

void *memcpy(void *d, const void *s, size_t n)
{
	void *ret = d;
	asm volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) :: "memory");
	return ret;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;
	for (; n; n--, x++, y++)
		if (*x != *y)
			return *x - *y;
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

int strcmp(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return (unsigned char)*a - (unsigned char)*b;
}

/* ---- Serial console (COM1) ---------------------------------------------------- */
#define UART_THR 0	/* transmit holding register (DLAB=0) */
#define UART_IER 1
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_LSR_THRE 0x20

static void serial_init(void)
{
	outb(KIT_COM1 + UART_IER, 0x00);	/* no UART interrupts */
	outb(KIT_COM1 + UART_LCR, 0x80);	/* DLAB on */
	outb(KIT_COM1 + 0, 0x01);		/* divisor 1: 115200 baud */
	outb(KIT_COM1 + 1, 0x00);
	outb(KIT_COM1 + UART_LCR, 0x03);	/* DLAB off, 8N1 */
	outb(KIT_COM1 + UART_MCR, 0x03);	/* DTR | RTS (OUT2 off: no IRQ) */
}

void serial_putc(char c)
{
	/* Bounded poll: a broken LSR must not hang the guest. */
	for (int i = 0; i < 100000; i++)
		if (inb(KIT_COM1 + UART_LSR) & UART_LSR_THRE)
			break;
	outb(KIT_COM1 + UART_THR, (uint8_t)c);
}

void kit_debugcon_putc(char c)
{
	outb(KIT_DEBUGCON, (uint8_t)c);
}

/* ---- printf ------------------------------------------------------------------------
 * Supports %d %i %u %x %X %p %s %c %% with flags '-', '0', '#', a width and
 * the length modifiers h, l, ll, z.  All output goes through a sink.
 */
struct sink {
	void (*put)(struct sink *s, char c);
	char *buf;
	size_t size, len;	/* len counts every char, even dropped ones */
};

static void sink_buf(struct sink *s, char c)
{
	if (s->len + 1 < s->size)
		s->buf[s->len] = c;
	s->len++;
}

static void sink_serial(struct sink *s, char c)
{
	serial_putc(c);
	s->len++;
}

static void put_padded(struct sink *s, const char *prefix, const char *body,
		       size_t body_len, int width, bool left, bool zero)
{
	int pad = width - (int)(strlen(prefix) + body_len);

	if (!left && !zero)
		for (; pad > 0; pad--)
			s->put(s, ' ');
	for (; *prefix; prefix++)
		s->put(s, *prefix);
	if (!left && zero)
		for (; pad > 0; pad--)
			s->put(s, '0');
	for (size_t i = 0; i < body_len; i++)
		s->put(s, body[i]);
	for (; pad > 0; pad--)
		s->put(s, ' ');
}

static void format(struct sink *s, const char *fmt, va_list ap)
{
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			s->put(s, *fmt);
			continue;
		}
		bool left = false, zero = false, alt = false;
		int width = 0, lng = 0;

		for (;; fmt++) {			/* flags */
			if (fmt[1] == '-') left = true;
			else if (fmt[1] == '0') zero = true;
			else if (fmt[1] == '#') alt = true;
			else break;
		}
		while (fmt[1] >= '0' && fmt[1] <= '9')	/* width */
			width = width * 10 + (*++fmt - '0');
		for (;; fmt++) {			/* length */
			if (fmt[1] == 'l' || fmt[1] == 'z') lng++;
			else if (fmt[1] != 'h') break;
		}
		fmt++;
		if (!*fmt)
			break;

		char num[24], *p = num + sizeof(num);
		const char *prefix = "";
		uint64_t v;
		unsigned base = 10;
		bool upper = false;

		switch (*fmt) {
		case 'c': {
			char c = (char)va_arg(ap, int);
			put_padded(s, "", &c, 1, width, left, false);
			continue;
		}
		case 's': {
			const char *str = va_arg(ap, const char *);
			if (!str)
				str = "(null)";
			put_padded(s, "", str, strlen(str), width, left, false);
			continue;
		}
		case 'd':
		case 'i': {
			int64_t sv = lng ? va_arg(ap, long) : va_arg(ap, int);
			if (sv < 0) {
				prefix = "-";
				v = -(uint64_t)sv;
			} else {
				v = sv;
			}
			break;
		}
		case 'p':
			v = (uintptr_t)va_arg(ap, void *);
			base = 16;
			prefix = "0x";
			break;
		case 'X':
			upper = true;
			/* fall through */
		case 'x':
			base = 16;
			/* fall through */
		case 'u':
			v = lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned int);
			if (alt && base == 16 && v)
				prefix = upper ? "0X" : "0x";
			break;
		default:		/* '%' or unknown: print literally */
			s->put(s, *fmt);
			continue;
		}
		do {
			unsigned d = v % base;
			*--p = (char)(d < 10 ? '0' + d : (upper ? 'A' : 'a') + d - 10);
			v /= base;
		} while (v);
		put_padded(s, prefix, p, num + sizeof(num) - p, width, left, zero && !left);
	}
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
	struct sink s = { .put = sink_buf, .buf = buf, .size = size };

	format(&s, fmt, ap);
	if (size)
		buf[s.len < size ? s.len : size - 1] = '\0';
	return (int)s.len;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	return n;
}

/*
 * One lock for the console so lines from different CPUs don't interleave.
 * Bounded: a CPU that faulted while holding it must not wedge the others.
 */
static int console_lock;

static void console_acquire(void)
{
	uint64_t end = rdtsc() + 1000000000ULL;
	while (__atomic_exchange_n(&console_lock, 1, __ATOMIC_ACQUIRE) && rdtsc() < end)
		;
}

static void console_release(void)
{
	__atomic_store_n(&console_lock, 0, __ATOMIC_RELEASE);
}

int vprintf(const char *fmt, va_list ap)
{
	struct sink s = { .put = sink_serial };

	console_acquire();
	format(&s, fmt, ap);
	console_release();
	return (int)s.len;
}

int printf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vprintf(fmt, ap);
	va_end(ap);
	return n;
}

int puts(const char *str)
{
	return printf("%s\n", str);
}

/* ---- Exit ------------------------------------------------------------------------------- */
void kit_exit(int code)
{
	outl(KIT_EXIT_PORT, (uint32_t)code);
	for (;;) {		/* only reached if the VMM ignored the port */
		cli();
		hlt();
	}
}

void kit_pass(void)
{
	printf("PASS\n");
	kit_exit(0);
}

void kit_fail(const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	printf("FAIL: %s\n", msg);
	kit_exit(1);
}

/* ---- IDT and dispatch --------------------------------------------------------------------- */
struct idt_entry {
	uint16_t offset_lo, selector;
	uint8_t ist, type_attr;		/* 0x8e: present, DPL 0, interrupt gate */
	uint16_t offset_mid;
	uint32_t offset_hi, zero;
};

static struct idt_entry idt[256] __attribute__((aligned(16)));
static kit_handler_t handlers[256];
volatile uint64_t kit_try_rip;
extern char kit_isr_stubs[];	/* isr.S: 256 stubs, 16 bytes apart */

void kit_load_idt(void)
{
	struct { uint16_t limit; uint64_t base; } __attribute__((packed)) desc = {
		sizeof(idt) - 1, (uintptr_t)idt,
	};
	asm volatile("lidt %0" :: "m"(desc));
}

static void idt_init(void)
{
	for (int v = 0; v < 256; v++) {
		uint64_t addr = (uintptr_t)kit_isr_stubs + 16 * v;
		idt[v] = (struct idt_entry){
			.offset_lo = (uint16_t)addr,
			.selector = KIT_CS64,
			.type_attr = 0x8e,
			.offset_mid = (uint16_t)(addr >> 16),
			.offset_hi = (uint32_t)(addr >> 32),
		};
	}
	kit_load_idt();
}

void kit_set_handler(int vector, kit_handler_t fn)
{
	handlers[vector & 0xff] = fn;
}

void kit_dispatch(struct kit_frame *f);		/* called from isr.S */
void kit_dispatch(struct kit_frame *f)
{
	kit_handler_t fn = handlers[f->vector & 0xff];

	if (fn) {
		fn(f);
		return;
	}
	if (f->vector < 32) {
		printf("EXCEPTION vector=%d error=%#lx rip=%#lx\n",
		       (int)f->vector, f->error_code, f->rip);
		kit_exit(3);
	}
	if (f->vector == 0xff)		/* LAPIC spurious vector: no EOI */
		return;
	printf("UNEXPECTED INTERRUPT vector=%d\n", (int)f->vector);
	kit_exit(4);
}

/* ---- PVH start info ------------------------------------------------------------------------- */
static struct hvm_start_info start_info;
static bool start_info_ok;
static char cmdline[1024];

const struct hvm_start_info *kit_start_info(void)
{
	return start_info_ok ? &start_info : NULL;
}

const char *kit_cmdline(void)
{
	return cmdline;
}

bool kit_cmdline_has(const char *word)
{
	size_t n = strlen(word);

	for (const char *c = cmdline; *c; c++)
		if ((c == cmdline || c[-1] == ' ') && !memcmp(c, word, n) && (c[n] == ' ' || !c[n]))
			return true;
	return false;
}

static void save_start_info(uint32_t paddr)
{
	const struct hvm_start_info *si = (const void *)(uintptr_t)paddr;

	if (!paddr || si->magic != HVM_START_MAGIC_VALUE) {
		printf("kit: WARNING: bad hvm_start_info at %#x\n", paddr);
		return;
	}
	start_info = *si;
	start_info_ok = true;
	if (si->cmdline_paddr) {
		const char *src = (const char *)(uintptr_t)si->cmdline_paddr;
		for (size_t i = 0; i < sizeof(cmdline) - 1 && src[i]; i++)
			cmdline[i] = src[i];
	}
}

/* ---- C entry (from boot.S) ------------------------------------------------------------------- */
void kit_start(uint32_t start_info_paddr);
void kit_start(uint32_t start_info_paddr)
{
	idt_init();
	serial_init();
	save_start_info(start_info_paddr);
	kit_main();
	/* A test ends by saying so (kit_pass, kit_fail, kit_exit): a kit_main that just
	 * returns may have skipped its checks (an early return), so it is not a pass. */
	kit_fail("kit_main returned without kit_pass()");
}
