/*
 * virtio_rng: the virtio-rng device over the modern PCI transport (vmm run --virtio-rng).
 *
 * Finds the device by PCI scan (1af4:1044), walks its vendor capabilities, negotiates
 * VERSION_1 + INDIRECT_DESC + EVENT_IDX (§3.1.1), sets up queue 0 with MSI-X entry 0
 * (the configuration vector is entry 1), and asks for random bytes three times: two
 * direct 64-byte buffers and one indirect table of two 16-byte buffers.  Each answer
 * must come with an interrupt, fill the buffer (the used length), and not be constant.
 * A fourth request with used_event far ahead must be answered without an interrupt.
 * cmdline "notify32": notify with 32-bit writes, which KVM's 2-byte ioeventfd doesn't
 * match: they exit to the BAR's MMIO handler instead (the fallback path).
 */
#include "kit.h"
#include "virtio.h"

#define VEC_QUEUE	0x50
#define VEC_CONFIG	0x51

static struct vdev dev;
static struct vq q;
static struct vq_mem qmem;
static struct vring_desc table[2] __attribute__((aligned(16)));
static uint8_t buf[3][64];
static volatile int irqs;

static void queue_irq(struct kit_frame *f) { (void)f; irqs++; lapic_eoi(); }
static void config_irq(struct kit_frame *f) { (void)f; kit_fail("configuration interrupt: status %#x", vdev_status(&dev)); }

static uint32_t request(uint16_t head)
{
	int before = irqs;
	uint32_t len;

	vq_kick(&q, head);
	if (!KIT_WAIT_FOR(vq_has_used(&q), 200))
		kit_fail("no used buffer");
	KIT_ASSERT(vq_take(&q, &len) == head);
	if (!KIT_WAIT_FOR(irqs > before, 200))
		kit_fail("no interrupt");
	return len;
}

static int distinct(const uint8_t *b, int n)
{
	int seen[256] = {0}, d = 0;
	for (int i = 0; i < n; i++)
		d += !seen[b[i]]++;
	return d;
}

void kit_main(void)
{
	printf("virtio_rng: random bytes from virtio-rng\n");
	if (!vdev_find(&dev, VIRTIO_ID_RNG, 0))
		kit_fail("no virtio-rng device (run with --virtio-rng)");
	KIT_ASSERT(vcfg_read8(dev.slot, 8) >= 1);			/* revision: modern */
	KIT_ASSERT(dev.msix && dev.pci_cfg && !dev.device);
	printf("virtio_rng: device at 00:%02x.0, notify multiplier %u\n", dev.slot, dev.notify_mult);

	lapic_enable();
	kit_set_handler(VEC_QUEUE, queue_irq);
	kit_set_handler(VEC_CONFIG, config_irq);
	uint32_t apic = lapic_id();

	/* FEATURES_OK doesn't stick without VERSION_1 (§6.1: a modern device) */
	KIT_ASSERT(!vdev_negotiate(&dev, VF_INDIRECT_DESC));
	if (!vdev_negotiate(&dev, VF_VERSION_1 | VF_INDIRECT_DESC | VF_EVENT_IDX))
		kit_fail("features refused");
	KIT_ASSERT(dev.features == (VF_VERSION_1 | VF_INDIRECT_DESC | VF_EVENT_IDX));
	KIT_ASSERT(vc_read16(&dev, VC_NUMQ) == 1);
	vdev_msix_entry(&dev, 0, apic, VEC_QUEUE);
	vdev_msix_entry(&dev, 1, apic, VEC_CONFIG);
	vdev_msix_enable(&dev, true);
	vc_write16(&dev, VC_MSIX, 1);
	KIT_ASSERT(vc_read16(&dev, VC_MSIX) == 1);
	vc_write16(&dev, VC_MSIX, 77);					/* beyond the table: no vector */
	KIT_ASSERT(vc_read16(&dev, VC_MSIX) == VIRTIO_NO_VECTOR);
	vc_write16(&dev, VC_MSIX, 1);
	if (!vq_setup(&dev, &q, 0, &qmem, 0))
		kit_fail("queue 0 setup failed");
	q.notify32 = strcmp(kit_cmdline(), "notify32") == 0;
	vdev_driver_ok(&dev);
	printf("virtio_rng: features %#lx, queue 0 of %d entries, MSI-X\n", dev.features, VQ_SIZE);

	for (int r = 0; r < 2; r++) {
		vdesc(qmem.desc, r, buf[r], 64, VRING_DESC_F_WRITE, 0);
		uint32_t len = request(r);
		if (len != 64 || distinct(buf[r], 64) < 16)
			kit_fail("request %d: %u bytes, %d distinct values", r, len, distinct(buf[r], 64));
	}
	KIT_ASSERT(memcmp(buf[0], buf[1], 64) != 0);
	vdesc(table, 0, buf[2], 16, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1);
	vdesc(table, 1, buf[2] + 16, 16, VRING_DESC_F_WRITE, 0);
	vdesc(qmem.desc, 2, table, sizeof(table), VRING_DESC_F_INDIRECT, 0);
	uint32_t len = request(2);
	KIT_ASSERT(len == 32 && distinct(buf[2], 32) >= 8);
	printf("virtio_rng: 2 x 64 bytes and 32 through an indirect table, %d interrupts, not constant\n", irqs);

	/* event idx (§2.7.10): used_event far ahead, so this one comes without an interrupt */
	int before = irqs;
	qmem.desc[0].len = 8;
	qmem.avail.ring[q.next_avail % q.size] = 0;
	qmem.avail.used_event = (uint16_t)(q.last_used + 100);
	barrier();
	qmem.avail.idx = ++q.next_avail;
	barrier();
	*q.notify = 0;
	for (long i = 0; !vq_has_used(&q); i++)
		if (i > 100000000)
			kit_fail("no used buffer for the suppressed request");
	vq_take(&q, &len);
	sti();
	for (volatile int i = 0; i < 3000; i++)
		;
	KIT_ASSERT(len == 8 && irqs == before);
	printf("virtio_rng: used_event ahead: answered without an interrupt\n");
	printf("virtio_rng: first bytes %02x %02x %02x %02x\n", buf[0][0], buf[0][1], buf[0][2], buf[0][3]);
	vdev_reset(&dev);
	kit_pass();
}
