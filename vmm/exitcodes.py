"""Process exit codes of `vmm run`: how the guest (or the VMM) ended.

A guest that writes V to the debug-exit port ends the VMM with V & 0xff, so
codes below 64 are the guest's own; the VMM's reasons sit above them.
"""

GUEST_POWEROFF = 0      # guest powered off (ACPI S5, Xen SHUTDOWN_poweroff) or wrote 0 to the debug-exit port
VMM_ERROR = 1           # the VMM itself failed (a bug or a host problem)
USER_ERROR = 2          # bad command line or input files; one line on stderr
GUEST_RESET = 80        # guest asked for a reset (i8042 0xFE, ACPI reset register, Xen SHUTDOWN_reboot)
TRIPLE_FAULT = 81       # KVM_EXIT_SHUTDOWN: the guest triple-faulted
GUEST_FAILURE = 82      # KVM could not run the guest, or it crashed (internal error, failed entry, Xen SHUTDOWN_crash)
GUEST_PANIC = 83        # the guest kernel said it panicked (pvpanic: devices/legacy.py PvPanic)
TIMEOUT = 124           # --timeout expired (as timeout(1))
INTERRUPTED = 130       # stopped by the user (Ctrl-A x, SIGINT, SIGTERM)
