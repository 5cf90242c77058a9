"""Xen HVM emulation (hypercalls, event channels, PIRQs, shared_info).

Not built yet: see the Xen core and PIRQ issues and ARCHITECTURE.md for where
it plugs in (vCPU exit handlers, the IrqChip seam, CPUID extra leaves).
"""
