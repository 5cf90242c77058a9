/* acpi_reset: acpi_poweroff, ending with the FADT's RESET_REG (VMM exit 80). */
#define ACPI_DO_RESET 1
#include "acpi_poweroff.c"
