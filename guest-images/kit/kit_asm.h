/* Constants shared between the kit's assembly and C code. */
#ifndef KIT_ASM_H
#define KIT_ASM_H

#define KIT_CS64		0x08	/* GDT selectors, see boot.S */
#define KIT_DS			0x10
#define KIT_CS32		0x18

#define KIT_STACK_SIZE		16384	/* per CPU (BSP and each AP) */
#define KIT_MAX_CPUS		8	/* APIC ids 0..7 can be started */

#define KIT_TRAMPOLINE_PADDR	0x8000	/* AP real-mode trampoline */

#endif
