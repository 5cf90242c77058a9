/*
 * A tiny virtio 1.x driver over the modern PCI transport for kit guests
 * (devices/virtio/, `vmm run --virtio-rng`, `--drive path=FILE`, `--net tap=NAME`).
 *
 * Virtio 1.2 §4.1 (PCI capabilities, common configuration, notifications, ISR),
 * §3.1 (device initialization), §2.7 (split virtqueues).  Constants and field
 * offsets as in Linux include/uapi/linux/virtio_{pci,config,ring}.h.
 * Header-only (static inline): include it after kit.h.
 */
#ifndef KIT_VIRTIO_H
#define KIT_VIRTIO_H

#include "kit.h"

#define VIRTIO_VENDOR		0x1af4
#define VIRTIO_DEVICE_BASE	0x1040	/* + the virtio device ID */
#define VIRTIO_ID_NET		1
#define VIRTIO_ID_BLOCK		2
#define VIRTIO_ID_RNG		4

/* status (§2.1) */
#define VS_ACKNOWLEDGE	1
#define VS_DRIVER	2
#define VS_DRIVER_OK	4
#define VS_FEATURES_OK	8
#define VS_NEEDS_RESET	0x40
#define VS_FAILED	0x80

/* features */
#define VF_INDIRECT_DESC	(1ull << 28)
#define VF_EVENT_IDX		(1ull << 29)
#define VF_VERSION_1		(1ull << 32)
#define VF_RING_RESET		(1ull << 40)

/* PCI */
#define PCI_CAP_ID_VNDR		0x09
#define PCI_CAP_ID_MSIX_	0x11
#define VIRTIO_PCI_CAP_COMMON	1
#define VIRTIO_PCI_CAP_NOTIFY	2
#define VIRTIO_PCI_CAP_ISR	3
#define VIRTIO_PCI_CAP_DEVICE	4
#define VIRTIO_PCI_CAP_PCI	5

/* struct virtio_pci_common_cfg */
#define VC_DFSELECT	0
#define VC_DF		4
#define VC_GFSELECT	8
#define VC_GF		12
#define VC_MSIX		16
#define VC_NUMQ		18
#define VC_STATUS	20
#define VC_GENERATION	21
#define VC_Q_SELECT	22
#define VC_Q_SIZE	24
#define VC_Q_MSIX	26
#define VC_Q_ENABLE	28
#define VC_Q_NOFF	30
#define VC_Q_DESC	32
#define VC_Q_AVAIL	40
#define VC_Q_USED	48
#define VC_Q_RESET	58
#define VIRTIO_NO_VECTOR 0xffff

/* split virtqueues (§2.7) */
#define VRING_DESC_F_NEXT	1
#define VRING_DESC_F_WRITE	2
#define VRING_DESC_F_INDIRECT	4

struct vring_desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
struct vring_used_elem { uint32_t id, len; };

#define VQ_SIZE	8
/* One queue's memory: descriptor table, driver area, device area (§2.7: 16/2/4 aligned). */
struct vq_mem {
	struct vring_desc desc[VQ_SIZE];
	struct { uint16_t flags, idx, ring[VQ_SIZE], used_event; } avail __attribute__((aligned(4)));
	struct { uint16_t flags, idx; struct vring_used_elem ring[VQ_SIZE]; uint16_t avail_event; }
		used __attribute__((aligned(4)));
} __attribute__((aligned(16)));

struct vdev {
	int slot;
	uint64_t bar[6];
	volatile uint8_t *common, *isr, *device, *notify;
	uint32_t notify_mult;
	int msix, pci_cfg;		/* capability offsets */
	volatile uint32_t *msix_table;
	uint64_t offered, features;	/* the device's features, and what was negotiated */
};

struct vq {
	struct vdev *dev;
	struct vq_mem *mem;
	uint16_t index, size, next_avail, last_used;
	volatile uint16_t *notify;
	bool notify32;		/* notify with a 32-bit write (not what KVM's ioeventfd matches) */
};

/* ---- config space ---- */
static inline uint32_t vcfg_addr(int slot, int off) { return 0x80000000u | (uint32_t)slot << 11 | (off & 0xfc); }
static inline uint32_t vcfg_read32(int slot, int off) { outl(0xcf8, vcfg_addr(slot, off)); return inl(0xcfc); }
static inline uint16_t vcfg_read16(int slot, int off)
	{ outl(0xcf8, vcfg_addr(slot, off)); return inw(0xcfc + (off & 2)); }
static inline uint8_t vcfg_read8(int slot, int off)
	{ outl(0xcf8, vcfg_addr(slot, off)); return inb(0xcfc + (off & 3)); }
static inline void vcfg_write16(int slot, int off, uint16_t v)
	{ outl(0xcf8, vcfg_addr(slot, off)); outw(0xcfc + (off & 2), v); }
static inline void vcfg_write32(int slot, int off, uint32_t v)
	{ outl(0xcf8, vcfg_addr(slot, off)); outl(0xcfc, v); }

/* ---- common configuration, with the width of each field ---- */
static inline uint8_t vc_read8(struct vdev *d, int off) { return *(volatile uint8_t *)(d->common + off); }
static inline uint16_t vc_read16(struct vdev *d, int off) { return *(volatile uint16_t *)(d->common + off); }
static inline uint32_t vc_read32(struct vdev *d, int off) { return *(volatile uint32_t *)(d->common + off); }
static inline void vc_write8(struct vdev *d, int off, uint8_t v) { *(volatile uint8_t *)(d->common + off) = v; }
static inline void vc_write16(struct vdev *d, int off, uint16_t v) { *(volatile uint16_t *)(d->common + off) = v; }
static inline void vc_write32(struct vdev *d, int off, uint32_t v) { *(volatile uint32_t *)(d->common + off) = v; }
static inline void vc_write64(struct vdev *d, int off, uint64_t v)
	{ vc_write32(d, off, (uint32_t)v); vc_write32(d, off + 4, (uint32_t)(v >> 32)); }
static inline uint8_t vdev_status(struct vdev *d) { return vc_read8(d, VC_STATUS); }

/* Find the nth (0-based) virtio device of type ID on bus 0 and its structures. */
static inline bool vdev_find(struct vdev *d, int id, int nth)
{
	memset(d, 0, sizeof(*d));
	for (d->slot = 0; d->slot < 32; d->slot++)
		if (vcfg_read32(d->slot, 0) == (uint32_t)((VIRTIO_DEVICE_BASE + id) << 16 | VIRTIO_VENDOR) && nth-- == 0)
			break;
	if (d->slot == 32)
		return false;
	for (int b = 0; b < 6; b++) {
		uint32_t lo = vcfg_read32(d->slot, 0x10 + 4 * b);
		d->bar[b] = lo & ~0xfull;
		if ((lo & 7) == 4 && b < 5) {	/* 64-bit memory BAR */
			d->bar[b] |= (uint64_t)vcfg_read32(d->slot, 0x10 + 4 * (b + 1)) << 32;
			b++;
		}
	}
	for (int p = vcfg_read8(d->slot, 0x34) & 0xfc, n = 0; p && n < 48; p = vcfg_read8(d->slot, p + 1) & 0xfc, n++) {
		int id8 = vcfg_read8(d->slot, p);
		if (id8 == PCI_CAP_ID_MSIX_) {
			uint32_t t = vcfg_read32(d->slot, p + 4);
			d->msix = p;
			d->msix_table = (volatile uint32_t *)(d->bar[t & 7] + (t & ~7u));
			continue;
		}
		if (id8 != PCI_CAP_ID_VNDR)
			continue;
		int type = vcfg_read8(d->slot, p + 3), bar = vcfg_read8(d->slot, p + 4);
		volatile uint8_t *at = (volatile uint8_t *)(d->bar[bar] + vcfg_read32(d->slot, p + 8));
		switch (type) {
		case VIRTIO_PCI_CAP_COMMON: if (!d->common) d->common = at; break;
		case VIRTIO_PCI_CAP_NOTIFY:
			if (!d->notify) { d->notify = at; d->notify_mult = vcfg_read32(d->slot, p + 16); }
			break;
		case VIRTIO_PCI_CAP_ISR: if (!d->isr) d->isr = at; break;
		case VIRTIO_PCI_CAP_DEVICE: if (!d->device) d->device = at; break;
		case VIRTIO_PCI_CAP_PCI: d->pci_cfg = p; break;
		}
	}
	return d->common && d->notify && d->isr;
}

/* Reset (§4.1.4.3.1: wait until status reads 0). */
static inline void vdev_reset(struct vdev *d)
{
	vc_write8(d, VC_STATUS, 0);
	while (vdev_status(d))
		;
}

/* §3.1.1 steps 1-6: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK.  Returns
 * false if the device refused the features; d->features is what was negotiated. */
static inline bool vdev_negotiate(struct vdev *d, uint64_t wanted)
{
	vdev_reset(d);
	vc_write8(d, VC_STATUS, VS_ACKNOWLEDGE);
	vc_write8(d, VC_STATUS, VS_ACKNOWLEDGE | VS_DRIVER);
	vc_write32(d, VC_DFSELECT, 0);
	uint64_t offered = vc_read32(d, VC_DF);
	vc_write32(d, VC_DFSELECT, 1);
	offered |= (uint64_t)vc_read32(d, VC_DF) << 32;
	d->offered = offered;
	d->features = offered & wanted;
	vc_write32(d, VC_GFSELECT, 0);
	vc_write32(d, VC_GF, (uint32_t)d->features);
	vc_write32(d, VC_GFSELECT, 1);
	vc_write32(d, VC_GF, (uint32_t)(d->features >> 32));
	vc_write8(d, VC_STATUS, VS_ACKNOWLEDGE | VS_DRIVER | VS_FEATURES_OK);
	return vdev_status(d) & VS_FEATURES_OK;
}

static inline void vdev_driver_ok(struct vdev *d)
	{ vc_write8(d, VC_STATUS, VS_ACKNOWLEDGE | VS_DRIVER | VS_FEATURES_OK | VS_DRIVER_OK); }

/* MSI-X: entry E -> VECTOR on our LAPIC, unmasked; then the function enabled. */
static inline void vdev_msix_entry(struct vdev *d, int e, uint32_t apic, uint32_t vector)
{
	volatile uint32_t *ent = d->msix_table + 4 * e;
	ent[3] = 1;
	ent[0] = (uint32_t)KIT_MSI_ADDR(apic);
	ent[1] = 0;
	ent[2] = vector;
	ent[3] = 0;
}
static inline void vdev_msix_enable(struct vdev *d, bool on)
	{ vcfg_write16(d->slot, d->msix + 2, on ? 0x8000 : 0); }

/* The usual MSI-X set-up: entry 0 -> QUEUE_VECTOR (for the queues), entry 1 -> CONFIG_VECTOR
 * (configuration changes: msix_config = 1), both to APIC; the function enabled. */
static inline void vdev_msix_setup(struct vdev *d, uint32_t apic, uint32_t queue_vector, uint32_t config_vector)
{
	vdev_msix_entry(d, 0, apic, queue_vector);
	vdev_msix_entry(d, 1, apic, config_vector);
	vdev_msix_enable(d, true);
	vc_write16(d, VC_MSIX, 1);
}

/* INTx: the device's INTA, on the GSI its interrupt-line register names, to VECTOR on APIC
 * through the I/O APIC (level-triggered, active low, as PCI INTx is). */
static inline void vdev_intx_route(struct vdev *d, uint32_t apic, uint8_t vector)
{
	volatile uint32_t *ioapic = (volatile uint32_t *)0xfec00000UL;	/* IOREGSEL, IOWIN at +0x10 */
	unsigned line = vcfg_read8(d->slot, 0x3c);
	ioapic[0] = 0x10 + 2 * line + 1;
	ioapic[4] = apic << 24;
	ioapic[0] = 0x10 + 2 * line;
	ioapic[4] = vector | 1u << 15 | 1u << 13;
}

/* Set up queue INDEX with VQ_SIZE entries in MEM (zeroed here), MSI-X VECTOR (or
 * VIRTIO_NO_VECTOR).  Returns false if the device has no such queue or refused the vector. */
static inline bool vq_setup(struct vdev *d, struct vq *q, int index, struct vq_mem *mem, uint16_t vector)
{
	vc_write16(d, VC_Q_SELECT, index);
	if (vc_read16(d, VC_Q_SIZE) < VQ_SIZE)
		return false;
	memset(mem, 0, sizeof(*mem));
	q->dev = d;
	q->mem = mem;
	q->index = index;
	q->size = VQ_SIZE;
	q->next_avail = q->last_used = 0;
	q->notify32 = false;
	vc_write16(d, VC_Q_SIZE, VQ_SIZE);
	vc_write64(d, VC_Q_DESC, (uint64_t)mem->desc);
	vc_write64(d, VC_Q_AVAIL, (uint64_t)&mem->avail);
	vc_write64(d, VC_Q_USED, (uint64_t)&mem->used);
	vc_write16(d, VC_Q_MSIX, vector);
	if (vc_read16(d, VC_Q_MSIX) != vector)
		return false;
	q->notify = (volatile uint16_t *)(d->notify + vc_read16(d, VC_Q_NOFF) * d->notify_mult);
	vc_write16(d, VC_Q_ENABLE, 1);
	return vc_read16(d, VC_Q_ENABLE) == 1;
}

/* Offer the chain starting at descriptor HEAD, without a notification. */
static inline void vq_post(struct vq *q, uint16_t head)
{
	struct vq_mem *m = q->mem;
	m->avail.ring[q->next_avail % q->size] = head;
	m->avail.used_event = q->last_used;	/* event idx: interrupt me for the next one */
	barrier();
	m->avail.idx = ++q->next_avail;
	barrier();
}

/* Notify the device (16-bit write, or 32-bit with notify32). */
static inline void vq_notify(struct vq *q)
{
	if (q->notify32)
		*(volatile uint32_t *)q->notify = q->index;
	else
		*q->notify = q->index;
}

/* Offer the chain starting at descriptor HEAD and notify the device. */
static inline void vq_kick(struct vq *q, uint16_t head)
{
	vq_post(q, head);
	vq_notify(q);
}

static inline bool vq_has_used(struct vq *q) { return *(volatile uint16_t *)&q->mem->used.idx != q->last_used; }

/* Take the next used element; returns its id and stores its length. */
static inline uint16_t vq_take(struct vq *q, uint32_t *len)
{
	struct vring_used_elem e = q->mem->used.ring[q->last_used % q->size];
	q->last_used++;
	if (len)
		*len = e.len;
	return (uint16_t)e.id;
}

static inline void vdesc(struct vring_desc *t, int i, const volatile void *addr, uint32_t len, uint16_t flags,
			 uint16_t next)
{
	t[i].addr = (uint64_t)addr;
	t[i].len = len;
	t[i].flags = flags;
	t[i].next = next;
}

#endif
