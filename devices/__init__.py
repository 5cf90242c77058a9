"""Emulated devices: each one a small class with read/write on a bus range.

Devices depend on ``vmm`` (buses, the IrqChip seam, tracing), never the other
way round.  ``devices.board`` assembles the standard PC devices onto a Vm.
"""
