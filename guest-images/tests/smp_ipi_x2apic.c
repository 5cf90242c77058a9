/* smp_ipi_x2apic: smp_ipi with both CPUs in x2APIC mode (ICR = MSR 0x830). */
#define SMP_IPI_X2APIC 1
#include "smp_ipi.c"
