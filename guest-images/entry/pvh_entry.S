/*
 * Minimal PVH guest for the loader's entry-state test.  Assembled twice, as
 * ELF32 (as --32 / ld -m elf_i386) and ELF64 (as --64 / ld -m elf_x86_64).
 * At entry it reports %ebx (the hvm_start_info address) with one port write
 * to 0x600, so the test can stop at that first exit and inspect every
 * register exactly as the loader left it; then it reads start_info->magic
 * and ends through the debug-exit port with 0 if it is right, 1 if not.
 */
#define XEN_ELFNOTE_PHYS32_ENTRY 18

	.section .note.Xen, "a", @note
	.balign 4
	.long 4f - 3f		/* namesz */
	.long 6f - 5f		/* descsz */
	.long XEN_ELFNOTE_PHYS32_ENTRY
3:	.asciz "Xen"
4:	.balign 4
5:	.long pvh_start
6:	.balign 4

	.text
	.code32
	.globl pvh_start
pvh_start:
	mov %ebx, %eax
	mov $0x600, %dx
	out %eax, %dx		/* first exit: test inspects the entry state here */
	cmpl $0x336ec578, (%ebx)
	jne 1f
	mov $0, %al
	jmp 2f
1:	mov $1, %al
2:	mov $0x501, %dx
	out %al, %dx
3:	hlt
	jmp 3b

	.bss
	.balign 4096
bss_start:
	.skip 8192		/* the loader must zero this */
