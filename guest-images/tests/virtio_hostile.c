/*
 * virtio_hostile: a hostile driver against virtio-rng (vmm run --virtio-rng).
 *
 * Each case breaks one rule of the split virtqueue (virtio 1.2 §2.7); the device
 * must mark itself broken (§2.1.2: DEVICE_NEEDS_RESET in device_status) and send a
 * configuration change interrupt (MSI-X entry 1), and the VMM must keep running.
 * After each case the driver resets the device, sets it up again and reads random
 * bytes: a reset recovers it.
 *
 *   ram       the descriptor table 64 GiB up, outside guest RAM (refused at queue_enable)
 *   loop      descriptor 0 -> 1 -> 0 -> ... (NEXT forever)
 *   jump      the avail index 100 entries ahead of the device in a queue of 8
 *   indirect  an indirect table whose descriptor is indirect again (nesting)
 *   head      an avail ring entry naming descriptor 200 of 8
 *   buffer    a buffer address outside guest RAM
 */
#include "kit.h"
#include "virtio.h"

#define VEC_QUEUE	0x50
#define VEC_CONFIG	0x51

static struct vdev dev;
static struct vq q;
static struct vq_mem qmem;
static struct vring_desc table[2] __attribute__((aligned(16)));
static struct vring_desc table2[1] __attribute__((aligned(16)));
static uint8_t buf[32];
static volatile int irqs, config_irqs;
static uint32_t apic;

static void queue_irq(struct kit_frame *f) { (void)f; irqs++; lapic_eoi(); }
static void config_irq(struct kit_frame *f) { (void)f; config_irqs++; lapic_eoi(); }

/* Negotiate, MSI-X (queue -> entry 0, config -> entry 1), queue 0; DRIVER_OK unless the queue failed. */
static bool setup(uint64_t desc_override)
{
	if (!vdev_negotiate(&dev, VF_VERSION_1 | VF_INDIRECT_DESC))
		kit_fail("features refused");
	vdev_msix_entry(&dev, 0, apic, VEC_QUEUE);
	vdev_msix_entry(&dev, 1, apic, VEC_CONFIG);
	vdev_msix_enable(&dev, true);
	vc_write16(&dev, VC_MSIX, 1);
	if (desc_override) {
		vc_write16(&dev, VC_Q_SELECT, 0);
		vc_write16(&dev, VC_Q_SIZE, VQ_SIZE);
		vc_write64(&dev, VC_Q_DESC, desc_override);
		vc_write64(&dev, VC_Q_AVAIL, (uint64_t)&qmem.avail);
		vc_write64(&dev, VC_Q_USED, (uint64_t)&qmem.used);
		vc_write16(&dev, VC_Q_MSIX, 0);
		vc_write16(&dev, VC_Q_ENABLE, 1);
		return vc_read16(&dev, VC_Q_ENABLE) == 1;
	}
	if (!vq_setup(&dev, &q, 0, &qmem, 0))
		kit_fail("queue setup failed");
	vdev_driver_ok(&dev);
	return true;
}

static void good_request(void)
{
	int before = irqs;
	uint32_t len;

	vdesc(qmem.desc, 0, buf, sizeof(buf), VRING_DESC_F_WRITE, 0);
	vq_kick(&q, 0);
	if (!KIT_WAIT_FOR(vq_has_used(&q) && irqs > before, 200))
		kit_fail("no answer after the reset");
	KIT_ASSERT(vq_take(&q, &len) == 0 && len == sizeof(buf));
}

static void expect_broken(const char *name)
{
	if (!KIT_WAIT_FOR(config_irqs > 0, 200))
		kit_fail("%s: no configuration interrupt (status %#x)", name, vdev_status(&dev));
	uint8_t st = vdev_status(&dev);
	if (!(st & VS_NEEDS_RESET))
		kit_fail("%s: status %#x without DEVICE_NEEDS_RESET", name, st);
	printf("virtio_hostile: %s: device broken (status %#x), configuration interrupt\n", name, st);
	config_irqs = 0;
	vdev_reset(&dev);
	KIT_ASSERT(vdev_status(&dev) == 0);
	setup(0);
	good_request();
	KIT_ASSERT(!(vdev_status(&dev) & VS_NEEDS_RESET));
	vdev_reset(&dev);
}

void kit_main(void)
{
	printf("virtio_hostile: a hostile driver against virtio-rng\n");
	if (!vdev_find(&dev, VIRTIO_ID_RNG, 0))
		kit_fail("no virtio-rng device (run with --virtio-rng)");
	lapic_enable();
	apic = lapic_id();
	kit_set_handler(VEC_QUEUE, queue_irq);
	kit_set_handler(VEC_CONFIG, config_irq);

	KIT_ASSERT(!setup(0x1000000000ull));		/* ram */
	expect_broken("ram");

	setup(0);					/* loop */
	vdesc(qmem.desc, 0, buf, 8, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1);
	vdesc(qmem.desc, 1, buf + 8, 8, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 0);
	vq_kick(&q, 0);
	expect_broken("loop");

	setup(0);					/* jump */
	vdesc(qmem.desc, 0, buf, 8, VRING_DESC_F_WRITE, 0);
	qmem.avail.idx = 100;
	barrier();
	*q.notify = 0;
	expect_broken("jump");

	setup(0);					/* indirect */
	vdesc(table2, 0, buf, 8, VRING_DESC_F_WRITE, 0);
	vdesc(table, 0, table2, sizeof(table2), VRING_DESC_F_INDIRECT, 0);
	vdesc(qmem.desc, 0, table, sizeof(table[0]), VRING_DESC_F_INDIRECT, 0);
	vq_kick(&q, 0);
	expect_broken("indirect");

	setup(0);					/* head */
	vq_kick(&q, 200);
	expect_broken("head");

	setup(0);					/* buffer */
	vdesc(qmem.desc, 0, (void *)0x2000000000ull, 8, VRING_DESC_F_WRITE, 0);
	vq_kick(&q, 0);
	expect_broken("buffer");

	printf("virtio_hostile: every case broke the device, a reset recovered it\n");
	kit_pass();
}
