/* exceptions: #DE, #UD, #PF and #GP are delivered to handlers and resumed. */
#include "kit.h"

#define UNMAPPED	0x100000000000ULL	/* above the 4 GiB identity map */
#define NONCANONICAL	0x8000000000000000ULL

static volatile int count[32];
static volatile uint64_t error[32], cr2;

static void handler(struct kit_frame *f)
{
	count[f->vector]++;
	error[f->vector] = f->error_code;
	if (f->vector == 14)
		cr2 = read_cr2();
	kit_try_resume(f);		/* continue after the faulting insn */
}

void kit_main(void)
{
	static const int vectors[] = { 0, 6, 13, 14 };

	printf("exceptions: testing #DE #UD #GP #PF\n");
	for (int i = 0; i < 4; i++)
		kit_set_handler(vectors[i], handler);

	KIT_TRY_ASM("xorl %%edx, %%edx; movl $1, %%eax; divl %0", "r"(0));
	KIT_TRY_ASM("ud2");
	KIT_TRY_ASM("movq (%0), %%rax", "r"(UNMAPPED));
	KIT_TRY_ASM("movq (%0), %%rax", "r"(NONCANONICAL));

	printf("exceptions: #DE=%d #UD=%d #GP=%d #PF=%d cr2=%#lx pf_error=%#lx\n",
	       count[0], count[6], count[13], count[14], cr2, error[14]);
	KIT_ASSERT(count[0] == 1 && count[6] == 1 && count[13] == 1 && count[14] == 1);
	KIT_ASSERT(cr2 == UNMAPPED);
	KIT_ASSERT((error[14] & 3) == 0);	/* not-present read */
	KIT_ASSERT(error[13] == 0);
	kit_pass();
}
