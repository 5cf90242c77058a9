/*
 * vmcall: on the host's KVM vmcall never returns, so this guest runs until
 * the VMM's --timeout kills it.  (Elsewhere vmcall may #UD -> exit 3.)
 */
#include "kit.h"

void kit_main(void)
{
	printf("about to vmcall\n");
	for (;;)
		asm volatile("vmcall" ::: "memory");
}
