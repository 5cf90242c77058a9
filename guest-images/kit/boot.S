/*
 * Kit boot code: PVH entry (32-bit) -> long mode -> kit_start(), and the AP
 * (secondary CPU) path real mode -> protected mode -> long mode -> kit_ap_entry().
 *
 * Memory map (all identity mapped, first 4 GiB with 2 MiB pages):
 *   0x8000       AP trampoline (copied there by kit_start_ap(), SIPI vector 0x08)
 *   0x100000     this image (text, rodata, data, bss incl. page tables + stacks)
 */
#include "kit_asm.h"

#define CR0_PG		0x80000000
#define CR4_PAE		0x20
#define MSR_EFER	0xc0000080
#define EFER_LME	0x100

/* ---------------------------------------------------------------------------
 * PVH ELF note: XEN_ELFNOTE_PHYS32_ENTRY (type 18, name "Xen") holding the
 * 32-bit physical entry point (see Xen public/elfnote.h, Linux pvh/head.S).
 */
	.pushsection .note.Xen, "a", @note
	.balign 4
	.long 2f - 1f			/* namesz */
	.long 4f - 3f			/* descsz */
	.long 18			/* type: XEN_ELFNOTE_PHYS32_ENTRY */
1:	.asciz "Xen"
2:	.balign 4
3:	.long pvh_start32		/* desc: entry point */
4:	.balign 4
	.popsection

/*
 * Switch from 32-bit protected mode (paging off) to long mode, then far-jump
 * to the 64-bit code at \target.  Needs a valid GDT with KIT_CS64 (loaded
 * here) and the page tables built.  Clobbers eax, ecx, edx.
 */
.macro ENTER_LONG_MODE target
	movl %cr4, %eax
	orl $CR4_PAE, %eax
	movl %eax, %cr4
	movl $kit_pml4, %eax
	movl %eax, %cr3
	movl $MSR_EFER, %ecx
	rdmsr
	orl $EFER_LME, %eax
	wrmsr
	lgdt kit_gdt_desc
	movl %cr0, %eax
	orl $CR0_PG, %eax		/* PE is already set */
	movl %eax, %cr0
	ljmp $KIT_CS64, $\target
.endm

/* ---------------------------------------------------------------------------
 * BSP entry.  PVH state: 32-bit flat protected mode, paging off, IF=0,
 * %ebx = physical address of struct hvm_start_info.
 */
	.section .text.boot, "ax"
	.code32
	.globl pvh_start32
pvh_start32:
	cli
	cld
	movl $kit_bsp_stack_top, %esp

	/* PML4[0] -> PDPT.  Everything else is 0 (BSS is zeroed by the loader). */
	movl $(kit_pdpt + 0x3), kit_pml4	/* present | writable */

	/* PDPT[0..3] -> the four page directories (1 GiB each). */
	movl $(kit_pd + 0x3), %eax
	movl $kit_pdpt, %edi
	movl $4, %ecx
1:	movl %eax, (%edi)
	addl $0x1000, %eax
	addl $8, %edi
	decl %ecx
	jnz 1b

	/* 4 x 512 PDEs: 2 MiB pages identity mapping 0..4 GiB. */
	movl $0x83, %eax			/* present | writable | PS (2M) */
	movl $kit_pd, %edi
	movl $2048, %ecx
1:	movl %eax, (%edi)
	addl $0x200000, %eax
	addl $8, %edi
	decl %ecx
	jnz 1b

	ENTER_LONG_MODE start64

	.code64
start64:
	movw $KIT_DS, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	xorl %eax, %eax
	movw %ax, %fs
	movw %ax, %gs
	movq $kit_bsp_stack_top, %rsp
	movl %ebx, %edi			/* arg: start_info paddr (zero-extended) */
	call kit_start
1:	cli				/* kit_start does not return */
	hlt
	jmp 1b

/* ---------------------------------------------------------------------------
 * AP path, second half: reached from the trampoline in 32-bit protected mode
 * with the kit GDT loaded.  Same page tables as the BSP.
 */
	.code32
ap_start32:
	movw $KIT_DS, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	ENTER_LONG_MODE ap_start64

	.code64
ap_start64:
	movw $KIT_DS, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	xorl %eax, %eax
	movw %ax, %fs
	movw %ax, %gs
	movq kit_ap_stack(%rip), %rsp	/* set by kit_start_ap() */
	call kit_ap_entry
1:	cli
	hlt
	jmp 1b

/* ---------------------------------------------------------------------------
 * AP trampoline (16-bit real mode).  Position dependent only on its own load
 * address: kit_start_ap() copies it to KIT_TRAMPOLINE_PADDR (0x8000) and
 * sends SIPI vector 0x08, so the AP starts here with CS=0x0800, IP=0.
 */
	.section .rodata, "a"
	.code16
	.globl kit_trampoline_start, kit_trampoline_end
kit_trampoline_start:
	cli
	cld
	movw %cs, %ax
	movw %ax, %ds
	lgdtl (tramp_gdt_desc - kit_trampoline_start)
	movl %cr0, %eax
	orl $1, %eax			/* CR0.PE */
	movl %eax, %cr0
	ljmpl $KIT_CS32, $ap_start32	/* absolute address in the image */
	.balign 4
tramp_gdt_desc:
	.word kit_gdt_end - kit_gdt - 1
	.long kit_gdt
kit_trampoline_end:
	.code64

/* ---------------------------------------------------------------------------
 * GDT: flat segments.  Accessed bits preset so the CPU never writes them.
 */
	.data
	.balign 16
	.globl kit_gdt, kit_gdt_end
kit_gdt:
	.quad 0				/* 0x00: null */
	.quad 0x00af9b000000ffff	/* 0x08: KIT_CS64, 64-bit code */
	.quad 0x00cf93000000ffff	/* 0x10: KIT_DS, flat data */
	.quad 0x00cf9b000000ffff	/* 0x18: KIT_CS32, 32-bit code (AP boot) */
kit_gdt_end:
	.balign 4
kit_gdt_desc:				/* 32-bit form, used by lgdt in 32-bit code */
	.word kit_gdt_end - kit_gdt - 1
	.long kit_gdt

/* ---------------------------------------------------------------------------
 * Page tables and the BSP stack live in BSS (zeroed by the loader).
 */
	.section .bss.kit_boot, "aw", @nobits
	.balign 4096
	.globl kit_pml4
kit_pml4:	.skip 4096
kit_pdpt:	.skip 4096
kit_pd:		.skip 4 * 4096
	.balign 16
kit_bsp_stack:	.skip KIT_STACK_SIZE
kit_bsp_stack_top:
