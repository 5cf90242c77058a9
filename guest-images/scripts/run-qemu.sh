#!/bin/sh
# Boot a kit guest in QEMU (TCG, no KVM) for checking the kit without the VMM.
# Usage: scripts/run-qemu.sh build/NAME.elf [extra qemu args, e.g. -smp 2]
# Prints the guest's serial output, then "exit=<code>" where <code> is the
# value written to the debug-exit port (QEMU exits with (V << 1) | 1), or
# "qemu-rc=<rc>" if QEMU stopped another way (reset/triple fault -> rc 0
# with -no-reboot, 124 = timeout).  No testdev in QEMU: msi.elf will hang.
elf=$1; shift
timeout 60 qemu-system-x86_64 -machine q35 -m 128 -display none -no-reboot \
	-serial stdio -monitor none -device isa-debug-exit,iobase=0x501,iosize=4 \
	-kernel "$elf" -append "${KIT_CMDLINE:-kit test cmdline}" "$@" </dev/null
rc=$?
if [ $((rc & 1)) = 1 ]; then
	echo "exit=$((rc >> 1))"
else
	echo "qemu-rc=$rc"
fi
