/* exitcode: exits with code 42 through the debug-exit port (no PASS line). */
#include "kit.h"

void kit_main(void)
{
	printf("exitcode: exiting with code 42\n");
	kit_exit(42);
}
