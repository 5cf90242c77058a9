/*
 * Xen kit trampolines: variable-number hypercall, CPL 3 calls (iretq in,
 * #UD out), and 32-bit compatibility-mode calls (lretq in, lret out).
 * See kit/xen.h.
 */
#include "kit_asm.h"

#define USER_DS		0x23	/* GDT 0x20 | RPL 3 (kit/xen/xen.c user_init) */
#define USER_CS		0x2b	/* GDT 0x28 | RPL 3 */

	.text
	.code64

/* long xen_hypercall_raw(unsigned nr, a1, a2, a3, a4, a5) */
	.globl xen_hypercall_raw
xen_hypercall_raw:
	movl %edi, %eax
	andl $127, %eax
	shll $5, %eax
	leaq xen_hypercall_page(%rip), %r11
	addq %rax, %r11
	movq %rsi, %rdi
	movq %rdx, %rsi
	movq %rcx, %rdx
	movq %r8, %r10
	movq %r9, %r8
	call *%r11
	ret

/*
 * long xen_user_call_asm(long (*fn)(void *), void *arg)
 * iretq to CPL 3 (IOPL 3, IF 0) at xen_user_entry on xen_user_stack, which
 * calls fn(arg) and comes back through a deliberate #UD at xen_user_exit:
 * the #UD handler (xen.c) resumes ring 0 at xen_user_return with the result
 * in %rdi.  (Not `syscall`: on the PVM host guest ring 3 runs natively and a
 * syscall does not bring the emulated guest kernel back to CPL 0.)
 */
	.globl xen_user_call_asm
xen_user_call_asm:
	pushq %rbx
	pushq %rbp
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
	pushfq
	cli
	movq %rsp, xen_user_saved_rsp(%rip)
	leaq xen_user_stack+8192(%rip), %rax
	pushq $USER_DS			/* SS */
	pushq %rax			/* RSP */
	pushq $0x3002			/* RFLAGS: IOPL 3, IF 0 */
	pushq $USER_CS			/* CS */
	leaq xen_user_entry(%rip), %rax
	pushq %rax			/* RIP */
	iretq

xen_user_entry:				/* CPL 3 */
	movq %rdi, %rax
	movq %rsi, %rdi
	call *%rax
	movq %rax, %rdi
	.globl xen_user_exit
xen_user_exit:				/* CPL 3: end the user call with %rdi */
	ud2

	.globl xen_user_return
xen_user_return:			/* CPL 0, on the saved stack (set up by the #UD handler) */
	movw $KIT_DS, %ax		/* iretq to CPL 3 nulled DS/ES (DPL 0 < CPL 3) */
	movw %ax, %ds
	movw %ax, %es
	movq %rdi, %rax
	popfq
	popq %r15
	popq %r14
	popq %r13
	popq %r12
	popq %rbp
	popq %rbx
	ret

/*
 * uint32_t xen_compat_call(uint32_t target, a1, a2, a3, a4, a5)
 * 64-bit -> compat mode (KIT_CS32: L=0 D=1) -> call target with
 * EBX ECX EDX ESI EDI = a1..a5 -> back to 64-bit with EAX.
 */
	.globl xen_compat_call
xen_compat_call:
	pushq %rbx
	pushq %rbp
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
	pushfq
	cli
	movl %edi, compat_target(%rip)
	movq %rsp, compat_saved_rsp(%rip)
	movw $KIT_DS, %ax
	movw %ax, %ds
	movw %ax, %es
	movl %esi, %ebx			/* a1 */
	movl %ecx, %eax			/* a3 */
	movl %edx, %ecx			/* a2 */
	movl %eax, %edx			/* a3 */
	movl %r8d, %esi			/* a4 */
	movl %r9d, %edi			/* a5 */
	pushq $KIT_CS32
	leaq 1f(%rip), %rax
	pushq %rax
	lretq
	.code32
1:	call *compat_target
	pushl $KIT_CS64
	pushl $2f
	lret
	.code64
2:	movq compat_saved_rsp(%rip), %rsp
	popfq
	popq %r15
	popq %r14
	popq %r13
	popq %r12
	popq %rbp
	popq %rbx
	ret

/*
 * A 32-bit function for the kit self-test: EBX + 2*ECX + 3*EDX + 4*ESI +
 * 5*EDI, or 0xffffffff when not executed in compatibility mode (0x48 is
 * `dec %eax` in 32-bit code but a REX.W prefix in 64-bit code).
 */
	.code32
	.globl xen_compat_selftest_fn
xen_compat_selftest_fn:
	xorl %eax, %eax
	.byte 0x48			/* dec %eax (32-bit) / rex.W (64-bit) */
	nop
	cmpl $-1, %eax
	jne 1f
	leal (%ebx,%ecx,2), %eax
	addl %edx, %eax
	addl %edx, %eax
	addl %edx, %eax
	leal (%eax,%esi,4), %eax
	leal (%edi,%edi,4), %edi
	addl %edi, %eax
	ret
1:	movl $-1, %eax
	ret
	.code64

	.bss
	.balign 8
	.globl xen_user_saved_rsp
xen_user_saved_rsp:	.skip 8
compat_saved_rsp:	.skip 8
compat_target:		.skip 4
