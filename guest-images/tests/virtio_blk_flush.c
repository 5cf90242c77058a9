/*
 * virtio_blk_flush: the data-safety guest (tests/test_virtio.py kills the VMM under it).
 *
 * For every sector n of the disk, in order: OUT of a 512-byte block that names n
 * ("flushed block %04d" then bytes n * 13 + i), then FLUSH, and only once both are
 * complete (used ring, status OK) "virtio_blk_flush: block N flushed" on the
 * console.  Every block the console reported must be in the file however the VMM
 * ends.  Polls the used ring (no interrupts: the fewest instructions per block).
 */
#include "kit.h"
#include "virtio.h"

#define T_OUT	1
#define T_FLUSH	4
#define F_FLUSH	(1ull << 9)

static struct vdev dev;
static struct vq q;
static struct vq_mem qmem;
static struct { uint32_t type, ioprio; uint64_t sector; } hdr;
static volatile uint8_t status;
static uint8_t block[512];

static int request(uint32_t type, uint64_t sector, uint32_t len)
{
	hdr.type = type;
	hdr.sector = sector;
	status = 0xff;
	vdesc(qmem.desc, 0, &hdr, sizeof(hdr), VRING_DESC_F_NEXT, 1);
	if (len) {
		vdesc(qmem.desc, 1, block, len, VRING_DESC_F_NEXT, 2);
		vdesc(qmem.desc, 2, &status, 1, VRING_DESC_F_WRITE, 0);
	} else {
		vdesc(qmem.desc, 1, &status, 1, VRING_DESC_F_WRITE, 0);
	}
	vq_kick(&q, 0);
	while (!vq_has_used(&q))
		asm volatile("pause");
	vq_take(&q, 0);
	return status;
}

void kit_main(void)
{
	printf("virtio_blk_flush: write + flush every block, report each\n");
	if (!vdev_find(&dev, VIRTIO_ID_BLOCK, 0))
		kit_fail("no virtio-blk device (run with --drive path=FILE)");
	if (!vdev_negotiate(&dev, VF_VERSION_1 | F_FLUSH) || !(dev.features & F_FLUSH))
		kit_fail("features refused");
	if (!vq_setup(&dev, &q, 0, &qmem, VIRTIO_NO_VECTOR))
		kit_fail("queue setup failed");
	vdev_driver_ok(&dev);
	uint64_t capacity = *(volatile uint64_t *)dev.device;
	printf("virtio_blk_flush: %lu blocks\n", capacity);
	for (uint64_t n = 0; n < capacity; n++) {
		for (int i = 0; i < 512; i++)
			block[i] = (uint8_t)(n * 13 + i);
		snprintf((char *)block, 32, "flushed block %04lu", n);
		if (request(T_OUT, n, 512) != 0 || request(T_FLUSH, 0, 0) != 0)
			kit_fail("block %lu: status %d", n, status);
		printf("virtio_blk_flush: block %lu flushed\n", n);
	}
	kit_pass();
}
