"""Where the loaders put things in low guest memory (all below 1 MiB).

    0x0500  GDT used by the 64-bit bzImage entry
    0x6000  struct hvm_start_info (PVH)
    0x6040  PVH module list
    0x6100  PVH memory map (up to 128 entries x 24 bytes)
    0x7000  zero page / struct boot_params (bzImage)
    0x9000  PML4, 0xA000 PDPT, 0xB000..0xEFFF four page directories
            (identity map of 0..4 GiB with 2 MiB pages, bzImage entry)
    0x20000 kernel command line (up to CMDLINE_MAX bytes)
    0xE0000 ACPI tables: RSDP, then DSDT, MADT, FADT, XSDT (vmm/boot/acpi.py), up to 0xF0000
    0xFFFF0 reset vector (F000:FFF0): a stub that writes the ACPI reset register
    0x100000 (1 MiB) kernel image

0x8000 is left free: the kit guests put their AP start-up trampoline there.
"""

BOOT_GDT = 0x500
PVH_START_INFO = 0x6000
PVH_MODLIST = 0x6040
PVH_MEMMAP = 0x6100
PVH_MEMMAP_MAX = 128
ZERO_PAGE = 0x7000
PML4 = 0x9000
PDPT = 0xA000
PD = 0xB000
CMDLINE = 0x20000
CMDLINE_MAX = 0x10000 - 1
ACPI_TABLES = 0xE0000
ACPI_TABLES_END = 0xF0000
RESET_VECTOR = 0xFFFF0
KERNEL_LOAD = 0x100000
