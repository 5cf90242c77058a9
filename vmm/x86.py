"""Architectural x86 constants (Intel SDM vol. 3): control registers, EFER, page tables.

Declared once for everything that builds or walks CPU state: the boot loaders
(vmm/boot/cpu_state.py) and the guest page walker (xen/guest_access.py).
"""

CR0_PE = 1 << 0
CR0_ET = 1 << 4
CR0_WP = 1 << 16
CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_LA57 = 1 << 12
EFER_LME = 1 << 8
EFER_LMA = 1 << 10

PTE_P = 1 << 0
PTE_RW = 1 << 1
PTE_US = 1 << 2
PTE_PS = 1 << 7
PTE_ADDR_MASK_64 = 0x000F_FFFF_FFFF_F000

PAGE_SIZE = 4096
