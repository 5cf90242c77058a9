/* hello: greeting, PVH command line, PASS (exit 0). */
#include "kit.h"

void kit_main(void)
{
	const struct hvm_start_info *si = kit_start_info();

	printf("Hello from the kit guest\n");
	printf("cmdline: %s\n", kit_cmdline());
	KIT_ASSERT(si && si->magic == HVM_START_MAGIC_VALUE);
	kit_pass();
}
