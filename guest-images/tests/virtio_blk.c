/*
 * virtio_blk: virtio-blk end to end (vmm run --drive path=FILE).
 *
 * The test's disk is 128 sectors, sector n filled with byte n (n < 64) before the
 * run.  Finds the device (1af4:1042), negotiates VERSION_1, SEG_MAX, BLK_SIZE,
 * FLUSH, DISCARD, INDIRECT_DESC, EVENT_IDX, reads the configuration (capacity,
 * blk_size, seg_max), then, each request answered by an interrupt:
 *   GET_ID ("vmm-" + the file's name); IN of sector 5 (the host's bytes);
 *   OUT of sectors 10-11 (a pattern), FLUSH, IN through an indirect table (equal);
 *   IN beyond the end, and straddling it (IOERR); IN of 100 bytes (IOERR);
 *   DISCARD of sectors 64-119 (then reads zeroes); an unknown type (UNSUPP).
 * cmdline "intx": MSI-X stays off, the interrupt is INTA through the I/O APIC and
 * the handler reads (and so clears) the ISR.  cmdline "ro" (with --drive ...,readonly):
 * the device offers RO and no DISCARD; OUT is IOERR and the sectors keep their bytes.
 */
#include "kit.h"
#include "virtio.h"

#define VEC_QUEUE	0x50
#define VEC_CONFIG	0x51
#define VEC_INTX	0x60

#define T_IN	0
#define T_OUT	1
#define T_FLUSH	4
#define T_GET_ID 8
#define T_DISCARD 11
#define S_OK	0
#define S_IOERR	1
#define S_UNSUPP 2
#define F_SEG_MAX	(1ull << 2)
#define F_RO		(1ull << 5)
#define F_BLK_SIZE	(1ull << 6)
#define F_FLUSH		(1ull << 9)
#define F_DISCARD	(1ull << 13)

static struct vdev dev;
static struct vq q;
static struct vq_mem qmem;
static struct vring_desc table[3] __attribute__((aligned(16)));
static struct { uint32_t type, ioprio; uint64_t sector; } hdr;
static struct { uint64_t sector; uint32_t num, flags; } seg;
static volatile uint8_t status;
static uint8_t data[1024], want[1024];
static volatile int irqs, isr_queue, spurious;
static bool intx, ro;

static void queue_irq(struct kit_frame *f) { (void)f; irqs++; lapic_eoi(); }
static void config_irq(struct kit_frame *f) { (void)f; kit_fail("configuration interrupt: status %#x", vdev_status(&dev)); }
static void intx_irq(struct kit_frame *f)
{
	(void)f;
	uint8_t isr = *dev.isr;		/* read-to-clear: lowers INTA */
	if (isr & 2)
		kit_fail("configuration interrupt: status %#x", vdev_status(&dev));
	if (isr & 1)
		irqs++, isr_queue++;
	else
		spurious++;
	lapic_eoi();
}

/* One request: header, then LEN bytes of BUF (device-writable if IN), then status. */
static int request(uint32_t type, uint64_t sector, void *buf, uint32_t len, bool in, bool indirect)
{
	struct vring_desc *t = indirect ? table : qmem.desc;
	int n = 0, before = irqs;
	uint32_t used;

	hdr.type = type;
	hdr.ioprio = 0;
	hdr.sector = sector;
	status = 0xff;
	vdesc(t, n, &hdr, sizeof(hdr), VRING_DESC_F_NEXT, n + 1), n++;
	if (len)
		vdesc(t, n, buf, len, VRING_DESC_F_NEXT | (in ? VRING_DESC_F_WRITE : 0), n + 1), n++;
	vdesc(t, n, &status, 1, VRING_DESC_F_WRITE, 0);
	if (indirect)
		vdesc(qmem.desc, 0, table, (n + 1) * sizeof(*t), VRING_DESC_F_INDIRECT, 0);
	vq_kick(&q, 0);
	if (!KIT_WAIT_FOR(vq_has_used(&q), 500))
		kit_fail("type %u: no used buffer", type);
	KIT_ASSERT(vq_take(&q, &used) == 0);
	if (!KIT_WAIT_FOR(irqs > before, 500))
		kit_fail("type %u: no interrupt", type);
	if (status == S_OK && in)
		KIT_ASSERT(used == len + 1);
	return status;
}

static void expect(int got, int want_status, const char *what)
{
	if (got != want_status)
		kit_fail("%s: status %d, expected %d", what, got, want_status);
}

void kit_main(void)
{
	intx = kit_cmdline_has("intx");
	ro = kit_cmdline_has("ro");
	printf("virtio_blk: virtio-blk on a host file (%s%s)\n", intx ? "INTx" : "MSI-X", ro ? ", read-only" : "");
	if (!vdev_find(&dev, VIRTIO_ID_BLOCK, 0))
		kit_fail("no virtio-blk device (run with --drive path=FILE)");
	KIT_ASSERT(dev.device && dev.msix);

	outb(0x21, 0xff);
	outb(0xa1, 0xff);
	lapic_enable();
	uint32_t apic = lapic_id();
	uint64_t wanted = VF_VERSION_1 | VF_INDIRECT_DESC | VF_EVENT_IDX | F_SEG_MAX | F_BLK_SIZE | F_FLUSH |
		(ro ? F_RO : F_DISCARD);
	if (!vdev_negotiate(&dev, wanted))
		kit_fail("features refused");
	if (dev.features != wanted)
		kit_fail("features offered %#lx, wanted %#lx", dev.offered, wanted);
	KIT_ASSERT(!(dev.offered & (ro ? F_DISCARD : F_RO)));
	uint64_t capacity = *(volatile uint64_t *)dev.device;
	uint32_t seg_max = *(volatile uint32_t *)(dev.device + 12), blk_size = *(volatile uint32_t *)(dev.device + 20);
	uint32_t max_discard = *(volatile uint32_t *)(dev.device + 36);
	printf("virtio_blk: capacity %lu sectors, blk_size %u, seg_max %u, max_discard_sectors %u\n",
	       capacity, blk_size, seg_max, max_discard);
	KIT_ASSERT(capacity == 128 && blk_size == 512 && (ro || max_discard > 0));

	if (intx) {
		kit_set_handler(VEC_INTX, intx_irq);
		vdev_intx_route(&dev, apic, VEC_INTX);
		if (!vq_setup(&dev, &q, 0, &qmem, VIRTIO_NO_VECTOR))
			kit_fail("queue setup failed");
	} else {
		kit_set_handler(VEC_QUEUE, queue_irq);
		kit_set_handler(VEC_CONFIG, config_irq);
		vdev_msix_setup(&dev, apic, VEC_QUEUE, VEC_CONFIG);
		if (!vq_setup(&dev, &q, 0, &qmem, 0))
			kit_fail("queue setup failed");
	}
	vdev_driver_ok(&dev);

	char id[21] = {0};
	expect(request(T_GET_ID, 0, id, 20, true, false), S_OK, "GET_ID");
	KIT_ASSERT(id[0] == 'v' && id[1] == 'm' && id[2] == 'm' && id[3] == '-');
	printf("virtio_blk: id '%s'\n", id);

	expect(request(T_IN, 5, data, 512, true, false), S_OK, "IN sector 5");
	for (int i = 0; i < 512; i++)
		if (data[i] != 5)
			kit_fail("sector 5 byte %d is %#x", i, data[i]);

	for (int i = 0; i < 1024; i++)
		want[i] = (uint8_t)(i * 7 + 3);
	snprintf((char *)want, 64, "virtio-blk was here, sectors 10-11");
	memcpy(data, want, sizeof(data));
	expect(request(T_OUT, 10, data, 1024, false, false), ro ? S_IOERR : S_OK, "OUT sectors 10-11");
	expect(request(T_FLUSH, 0, 0, 0, false, false), S_OK, "FLUSH");
	memset(data, 0, sizeof(data));
	expect(request(T_IN, 10, data, 1024, true, true), S_OK, "IN sectors 10-11 (indirect)");
	if (ro) {
		for (int i = 0; i < 1024; i++)
			KIT_ASSERT(data[i] == 10 + i / 512);
		printf("virtio_blk: read-only: OUT refused (IOERR), sectors 10-11 unchanged\n");
		expect(request(T_DISCARD, 0, &seg, sizeof(seg), false, false), S_UNSUPP, "DISCARD not negotiated");
		vdev_reset(&dev);
		kit_pass();
	}
	KIT_ASSERT(memcmp(data, want, sizeof(data)) == 0);
	printf("virtio_blk: wrote sectors 10-11, flushed, read them back through an indirect table\n");

	expect(request(T_IN, capacity, data, 512, true, false), S_IOERR, "IN beyond the end");
	expect(request(T_IN, capacity - 1, data, 1024, true, false), S_IOERR, "IN across the end");
	expect(request(T_OUT, capacity, data, 512, false, false), S_IOERR, "OUT beyond the end");
	expect(request(T_IN, 0, data, 100, true, false), S_IOERR, "IN of 100 bytes");
	printf("virtio_blk: beyond the end and partial sectors: IOERR\n");

	seg.sector = 64;		/* 28 KiB: whole blocks of the file, which the test sees freed */
	seg.num = 56;
	seg.flags = 0;
	expect(request(T_DISCARD, 0, &seg, sizeof(seg), false, false), S_OK, "DISCARD sectors 64-119");
	memset(data, 0xaa, 512);
	expect(request(T_IN, 64, data, 512, true, false), S_OK, "IN sector 64");
	for (int i = 0; i < 512; i++)
		KIT_ASSERT(data[i] == 0);
	seg.flags = 1;		/* unmap: a WRITE_ZEROES flag */
	expect(request(T_DISCARD, 0, &seg, sizeof(seg), false, false), S_UNSUPP, "DISCARD with unmap");
	expect(request(99, 0, 0, 0, false, false), S_UNSUPP, "type 99");
	printf("virtio_blk: discard reads back zeroes; unknown type and flag: UNSUPP\n");
	printf("virtio_blk: %d requests, %d interrupts (ISR queue bit %d, spurious %d)\n", 13, irqs, isr_queue,
	       spurious);
	vdev_reset(&dev);
	kit_pass();
}
