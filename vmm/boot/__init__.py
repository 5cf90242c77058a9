"""Boot loaders: put a kernel into guest memory and describe the entry state.

* ``pvh``     — ELF32/ELF64 with XEN_ELFNOTE_PHYS32_ENTRY, 32-bit flat entry,
                %ebx -> struct hvm_start_info.
* ``bzimage`` — Linux bzImage via the 64-bit boot protocol (zero page in %rsi).

``load_kernel`` sniffs the file and picks one.  Loaders raise
``vmm.errors.UserError`` for bad images, with one line saying what is wrong.
"""

from __future__ import annotations

from vmm.boot.loader import BootInfo, load_kernel

__all__ = ["BootInfo", "load_kernel"]
