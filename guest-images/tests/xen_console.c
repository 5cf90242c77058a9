/*
 * xen_console: __HYPERVISOR_console_io as a debug-build Xen answers a domU
 * (xen/drivers/char/console.c do_console_io, guest_console_write;
 * xen/include/xsm/dummy.h xsm_console_io: CONSOLEIO_write is allowed with
 * CONFIG_VERBOSE_DEBUG, everything else needs privilege -> -EPERM).
 *
 * The VMM's stdout must then contain these two lines (Xen keeps only
 * printable characters, '\n' and '\t', and buffers a domU's output until a
 * newline; it may prefix the line, e.g. "(d1) "):
 *     XENCON-7f3a hello from CONSOLEIO_write
 *     XENCON-7f3a split-line-ok
 * The first buffer has a BEL (0x07) right after the marker.  This guest
 * never prints the marker through the serial port itself.
 */
#include "xen.h"

static const char msg1[] = "XENCON-7f3a\a hello from CONSOLEIO_write\n";
static const char part1[] = "XENCON-7f3a split-";
static const char part2[] = "line-ok\n";

void kit_main(void)
{
	printf("xen_console: CONSOLEIO_write to the hypervisor console\n");
	xen_test_name = "xen_console";
	xen_init();

	XEN_EXPECT("CONSOLEIO_write(line with BEL)",
		   HYPERVISOR_console_io(CONSOLEIO_write, sizeof(msg1) - 1, msg1), 0);
	XEN_EXPECT("CONSOLEIO_write(first half)",
		   HYPERVISOR_console_io(CONSOLEIO_write, sizeof(part1) - 1, part1), 0);
	XEN_EXPECT("CONSOLEIO_write(second half)",
		   HYPERVISOR_console_io(CONSOLEIO_write, sizeof(part2) - 1, part2), 0);
	XEN_EXPECT("CONSOLEIO_write(count 0)", HYPERVISOR_console_io(CONSOLEIO_write, 0, msg1), 0);
	XEN_EXPECT("CONSOLEIO_write(unmapped buffer)",
		   HYPERVISOR_console_io(CONSOLEIO_write, 16, (const char *)XEN_KIT_UNMAPPED_VA), -XEN_EFAULT);
	static char rbuf[64];
	XEN_EXPECT("CONSOLEIO_read (domU)", HYPERVISOR_console_io(CONSOLEIO_read, sizeof(rbuf), rbuf), -XEN_EPERM);
	XEN_EXPECT("console_io cmd 99 (domU)", HYPERVISOR_console_io(99, 0, NULL), -XEN_EPERM);
	xen_pass();
}
