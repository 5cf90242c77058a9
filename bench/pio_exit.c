/*
 * Baseline for bench/pio_exit.py: the same guest loop (N port writes to 0x700,
 * then one to 0x701) run by a minimal C VMM on the same /dev/kvm, so the
 * Python VMM's per-exit cost can be quoted as a ratio.  Prints "<exits> <seconds>".
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>

#define DIE(msg) do { perror(msg); exit(1); } while (0)

int main(int argc, char **argv)
{
	if (argc < 2) { fprintf(stderr, "usage: %s CODEFILE\n", argv[0]); return 2; }
	uint8_t code[256];
	FILE *f = fopen(argv[1], "rb");
	if (!f) DIE("code");
	size_t n = fread(code, 1, sizeof(code), f);
	fclose(f);

	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) DIE("/dev/kvm");
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0) DIE("KVM_CREATE_VM");
	size_t memsz = 16 << 20;
	uint8_t *mem = mmap(NULL, memsz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memcpy(mem + 0x100000, code, n);
	struct kvm_userspace_memory_region region = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = memsz, .userspace_addr = (uintptr_t)mem };
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) DIE("KVM_SET_USER_MEMORY_REGION");
	if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) DIE("KVM_CREATE_IRQCHIP");
	int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0) DIE("KVM_CREATE_VCPU");
	int runsz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	struct kvm_run *run = mmap(NULL, runsz, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);

	struct kvm_sregs sregs;
	if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) DIE("KVM_GET_SREGS");
	struct kvm_segment cs = { .base = 0, .limit = 0xffffffff, .selector = 8, .type = 11,
				  .present = 1, .s = 1, .db = 1, .g = 1 };
	struct kvm_segment ds = cs;
	ds.selector = 16; ds.type = 3;
	sregs.cs = cs; sregs.ds = sregs.es = sregs.ss = sregs.fs = sregs.gs = ds;
	sregs.tr.type = 11; sregs.tr.present = 1; sregs.tr.limit = 0xffff; sregs.tr.s = 0;
	sregs.cr0 = 0x11; sregs.cr4 = 0; sregs.efer = 0;
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) DIE("KVM_SET_SREGS");
	struct kvm_regs regs = { .rip = 0x100000, .rflags = 2 };
	if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) DIE("KVM_SET_REGS");

	struct timespec t0, t1;
	long exits = 0;
	volatile uint32_t sink = 0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0) DIE("KVM_RUN");
		exits++;
		if (run->exit_reason != KVM_EXIT_IO) { fprintf(stderr, "exit %u\n", run->exit_reason); return 1; }
		uint8_t *data = (uint8_t *)run + run->io.data_offset;
		if (run->io.port == 0x701)
			break;
		sink += data[0];   /* "handle" the write, as the Python null device does */
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("%ld %.9f\n", exits, (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
	return 0;
}
