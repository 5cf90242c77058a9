/*
 * Interrupt/exception entry stubs for all 256 vectors.
 *
 * Stub N lives at kit_isr_stubs + 16 * N.  It pushes a dummy error code
 * (unless the CPU pushed one for this vector) and the vector number, then
 * jumps to the common code, which saves the general purpose registers and
 * calls kit_dispatch(struct kit_frame *).  The layout pushed here must match
 * struct kit_frame in kit.h.
 */

	.text
	.code64

/* Exceptions for which the CPU pushes an error code. */
#define HAS_ERROR_CODE(v) ((v) == 8 || ((v) >= 10 && (v) <= 14) || \
			   (v) == 17 || (v) == 21 || (v) == 29 || (v) == 30)

	.balign 16
	.globl kit_isr_stubs
kit_isr_stubs:
	vec = 0
	.rept 256
	.balign 16
	.if !HAS_ERROR_CODE(vec)
	pushq $0			/* dummy error code */
	.endif
	pushq $vec
	jmp kit_isr_common
	vec = vec + 1
	.endr

kit_isr_common:
	pushq %rax
	pushq %rbx
	pushq %rcx
	pushq %rdx
	pushq %rsi
	pushq %rdi
	pushq %rbp
	pushq %r8
	pushq %r9
	pushq %r10
	pushq %r11
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
	/* 22 quadwords on the stack incl. the CPU frame: %rsp is 16-aligned. */
	movq %rsp, %rdi
	cld
	call kit_dispatch
	popq %r15
	popq %r14
	popq %r13
	popq %r12
	popq %r11
	popq %r10
	popq %r9
	popq %r8
	popq %rbp
	popq %rdi
	popq %rsi
	popq %rdx
	popq %rcx
	popq %rbx
	popq %rax
	addq $16, %rsp			/* vector + error code */
	iretq
