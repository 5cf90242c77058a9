"""Architectural x86 constants (Intel SDM vol. 3): control registers, EFER, page tables.

Declared once for everything that builds or walks CPU state: the boot loaders
(vmm/boot/cpu_state.py) and the guest page walker (xen/guest_access.py); and the
page size, for everything that counts in pages.
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
PTE_ADDR_MASK_64 = 0x000F_FFFF_FFFF_F000     # PAE and long-mode entries: the next table or page
PTE_ADDR_MASK_32 = 0xFFFF_F000               # legacy 2-level entries (and CR3 without PAE)
PDE_4M_ADDR_MASK_32 = 0xFFC0_0000            # legacy PDE with PS (CR4.PSE): a 4 MiB page
CR3_PAE_PDPT_MASK = 0xFFFF_FFE0              # PAE CR3: the 32-byte aligned PDPT

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT      # the one page size: guest pages, Xen's pages, KVM memory slots
