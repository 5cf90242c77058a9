/*
 * virtio_snapshot: virtio-blk (and virtio-rng, if there is one) busy all the time, for
 * snapshots taken mid-run (tests/test_virtio_snapshot.py; vmm run --drive path=F
 * [--virtio-rng]).
 *
 * Each round: K OUT requests of a pattern naming the round and the sector (sectors
 * round*K..+K-1 of the disk, wrapping), posted together (one indirect table each) with
 * one notify, then K IN requests of the same sectors, compared; with virtio-rng, one
 * 16-byte request too.  Every request must complete exactly once: each batch's used
 * elements name each head once, the used index never passes what was posted, and each
 * batch comes with an interrupt (MSI-X; cmdline "intx": INTA through the I/O APIC and
 * the ISR, virtio-blk only).  A LAPIC timer bounds every wait (a lost interrupt fails
 * the run with a message instead of hanging it).  "round=N ..." every 10 rounds; at
 * the end every sector written is read back again and must hold its last round's
 * pattern (the disk file carries it across a restore).  cmdline rounds=N (default 300);
 * silent=N: round N's writes are posted without a notify, and the guest waits (up to a
 * minute) for them: a snapshot taken then must have the restored device look at its
 * rings on its own (a notification taken before the snapshot is not lost).
 */
#include "kit.h"
#include "virtio.h"

#define VEC_TIMER	0x30
#define VEC_BLK		0x50
#define VEC_CONFIG	0x51
#define VEC_RNG		0x52
#define VEC_INTX	0x60

#define T_IN	0
#define T_OUT	1
#define K	4		/* requests in flight per batch */
#define SECTOR	512

static struct vdev blk, rng;
static struct vq bq, rq;
static struct vq_mem bmem, rmem;
static struct vring_desc tables[K][3] __attribute__((aligned(16)));
static struct { uint32_t type, ioprio; uint64_t sector; } hdrs[K];
static volatile uint8_t statuses[K];
static uint8_t bufs[K][SECTOR], want[SECTOR], rbuf[16];
static volatile unsigned blk_irqs, rng_irqs, spurious;
static unsigned long blk_done, rng_done;
static bool intx, have_rng;
static uint64_t capacity;

static void timer_irq(struct kit_frame *f) { (void)f; lapic_eoi(); }
static void blk_irq(struct kit_frame *f) { (void)f; blk_irqs++; lapic_eoi(); }
static void rng_irq(struct kit_frame *f) { (void)f; rng_irqs++; lapic_eoi(); }
static void config_irq(struct kit_frame *f) { (void)f; kit_fail("configuration interrupt: status %#x", vdev_status(&blk)); }
static void intx_irq(struct kit_frame *f)
{
	(void)f;
	uint8_t isr = *blk.isr;		/* read-to-clear: lowers INTA */
	if (isr & 2)
		kit_fail("configuration interrupt: status %#x", vdev_status(&blk));
	if (isr & 1)
		blk_irqs++;
	else
		spurious++;
	lapic_eoi();
}

static unsigned long cmdline_number(const char *key, unsigned long dflt)
{
	size_t n = strlen(key);
	for (const char *a = kit_cmdline(); *a; a++) {
		if (memcmp(a, key, n))
			continue;
		unsigned long v = 0;
		for (a += n; *a >= '0' && *a <= '9'; a++)
			v = v * 10 + (unsigned long)(*a - '0');
		return v;
	}
	return dflt;
}

static void pattern(uint8_t *b, unsigned long round, uint64_t sector)
{
	for (int i = 0; i < SECTOR; i++)
		b[i] = (uint8_t)(round * 31 + sector * 7 + i);
	snprintf((char *)b, 48, "round %lu sector %lu", round, sector);
}

static uint16_t used_idx(struct vq *q) { return *(volatile uint16_t *)&q->mem->used.idx; }

/* Wait for N used elements on Q (bounded by timer ticks), then check them: each head
 * 0..N-1 once, nothing beyond, and an interrupt since IRQS_BEFORE. */
static void collect(struct vq *q, int n, volatile unsigned *irqs, unsigned irqs_before, const char *what,
		    uint32_t *lens, unsigned long max_ticks)
{
	uint16_t target = (uint16_t)(q->last_used + n);
	if (!KIT_WAIT_FOR((uint16_t)(used_idx(q) - q->last_used) >= n, max_ticks))
		kit_fail("%s: %u of %d requests completed", what, (uint16_t)(used_idx(q) - q->last_used), n);
	if (used_idx(q) != target)
		kit_fail("%s: used index %u, only %u posted: a request completed twice", what, used_idx(q), target);
	unsigned seen = 0;
	for (int i = 0; i < n; i++) {
		uint32_t len;
		uint16_t id = vq_take(q, &len);
		if (id >= n || seen & 1u << id)
			kit_fail("%s: head %u completed %s", what, id, id >= n ? "but was never posted" : "twice");
		seen |= 1u << id;
		if (lens)
			lens[id] = len;
	}
	if (!KIT_WAIT_FOR(*irqs != irqs_before, 1000))
		kit_fail("%s: completed without an interrupt", what);
}

/* K requests of TYPE, request j on sector SECTORS[j] with buffer bufs[j].  SILENT: posted
 * without a notify (the device must find them when it is restored). */
static void batch(uint32_t type, const uint64_t *sectors, unsigned long round, bool silent)
{
	unsigned before = blk_irqs;
	uint32_t lens[K];
	for (int j = 0; j < K; j++) {
		hdrs[j].type = type;
		hdrs[j].ioprio = 0;
		hdrs[j].sector = sectors[j];
		statuses[j] = 0xff;
		vdesc(tables[j], 0, &hdrs[j], sizeof(hdrs[j]), VRING_DESC_F_NEXT, 1);
		vdesc(tables[j], 1, bufs[j], SECTOR, VRING_DESC_F_NEXT | (type == T_IN ? VRING_DESC_F_WRITE : 0), 2);
		vdesc(tables[j], 2, &statuses[j], 1, VRING_DESC_F_WRITE, 0);
		vdesc(bmem.desc, j, tables[j], sizeof(tables[j]), VRING_DESC_F_INDIRECT, 0);
		vq_post(&bq, (uint16_t)j);
	}
	if (silent)
		printf("virtio_snapshot: round %lu: %d requests posted without a notify\n", round + 1, K);
	else
		vq_notify(&bq);
	collect(&bq, K, &blk_irqs, before, type == T_IN ? "IN" : "OUT", lens, silent ? 6000 : 1000);
	for (int j = 0; j < K; j++) {
		if (statuses[j] != 0)
			kit_fail("round %lu: %s of sector %lu: status %u", round, type == T_IN ? "IN" : "OUT",
				 sectors[j], statuses[j]);
		if (lens[j] != (type == T_IN ? SECTOR + 1 : 1))
			kit_fail("round %lu: used length %u", round, lens[j]);
	}
	blk_done += K;
}

static void rng_request(void)
{
	unsigned before = rng_irqs;
	uint32_t len;
	vdesc(rmem.desc, 0, rbuf, sizeof(rbuf), VRING_DESC_F_WRITE, 0);
	vq_kick(&rq, 0);
	collect(&rq, 1, &rng_irqs, before, "rng", &len, 1000);
	if (len != sizeof(rbuf))
		kit_fail("rng: used length %u", len);
	rng_done++;
}

static void setup_blk(uint32_t apic)
{
	if (!vdev_find(&blk, VIRTIO_ID_BLOCK, 0))
		kit_fail("no virtio-blk device (run with --drive path=FILE)");
	if (!vdev_negotiate(&blk, VF_VERSION_1 | VF_INDIRECT_DESC | VF_EVENT_IDX) ||
	    !(blk.features & VF_INDIRECT_DESC) || !(blk.features & VF_EVENT_IDX))
		kit_fail("virtio-blk features refused");
	capacity = *(volatile uint64_t *)blk.device;
	if (intx) {
		kit_set_handler(VEC_INTX, intx_irq);
		vdev_intx_route(&blk, apic, VEC_INTX);
		if (!vq_setup(&blk, &bq, 0, &bmem, VIRTIO_NO_VECTOR))
			kit_fail("virtio-blk queue setup failed");
	} else {
		kit_set_handler(VEC_BLK, blk_irq);
		kit_set_handler(VEC_CONFIG, config_irq);
		vdev_msix_setup(&blk, apic, VEC_BLK, VEC_CONFIG);
		if (!vq_setup(&blk, &bq, 0, &bmem, 0))
			kit_fail("virtio-blk queue setup failed");
	}
	vdev_driver_ok(&blk);
}

static void setup_rng(uint32_t apic)
{
	if (intx || !vdev_find(&rng, VIRTIO_ID_RNG, 0))
		return;
	if (!vdev_negotiate(&rng, VF_VERSION_1 | VF_EVENT_IDX))
		kit_fail("virtio-rng features refused");
	kit_set_handler(VEC_RNG, rng_irq);
	vdev_msix_setup(&rng, apic, VEC_RNG, VEC_CONFIG);
	if (!vq_setup(&rng, &rq, 0, &rmem, 0))
		kit_fail("virtio-rng queue setup failed");
	vdev_driver_ok(&rng);
	have_rng = true;
}

void kit_main(void)
{
	unsigned long rounds = cmdline_number("rounds=", 300), silent = cmdline_number("silent=", 0);
	intx = kit_cmdline_has("intx");
	printf("virtio_snapshot: boot\n");
	outb(0x21, 0xff);
	outb(0xa1, 0xff);
	lapic_enable();
	uint32_t apic = lapic_id();
	kit_set_handler(VEC_TIMER, timer_irq);
	lapic_timer_periodic(VEC_TIMER, 16, 600000);	/* ~10 ms: bounds the waits */
	setup_blk(apic);
	setup_rng(apic);
	KIT_ASSERT(capacity >= K && capacity % K == 0);
	printf("virtio_snapshot: %lu rounds of %d OUT + %d IN on %lu sectors%s, %s\n", rounds, K, K, capacity,
	       have_rng ? " and a virtio-rng request" : "", intx ? "INTx" : "MSI-X");

	uint64_t sectors[K];
	for (unsigned long r = 0; r < rounds; r++) {
		for (int j = 0; j < K; j++) {
			sectors[j] = (r * K + j) % capacity;
			pattern(bufs[j], r, sectors[j]);
		}
		batch(T_OUT, sectors, r, r + 1 == silent);
		for (int j = 0; j < K; j++)
			memset(bufs[j], 0, SECTOR);
		batch(T_IN, sectors, r, false);
		for (int j = 0; j < K; j++) {
			pattern(want, r, sectors[j]);
			if (memcmp(bufs[j], want, SECTOR))
				kit_fail("round %lu: sector %lu read back other bytes", r, sectors[j]);
		}
		if (have_rng)
			rng_request();
		if (r % 10 == 9)
			printf("round=%lu blk=%lu rng=%lu\n", r + 1, blk_done, rng_done);
	}

	/* Every sector written holds its last round's pattern (its writes before a snapshot
	 * are in the file the restored run reads). */
	uint64_t written = rounds * K < capacity ? rounds * K : capacity;
	for (uint64_t s = 0; s < written; s += K) {
		for (int j = 0; j < K; j++)
			sectors[j] = (s + j) % capacity;
		batch(T_IN, sectors, rounds, false);
		for (int j = 0; j < K; j++) {
			uint64_t last = (rounds * K - 1 - sectors[j]) / capacity * capacity + sectors[j];
			pattern(want, last / K, sectors[j]);
			if (memcmp(bufs[j], want, SECTOR))
				kit_fail("sector %lu does not hold round %lu's pattern", sectors[j], last / K);
		}
	}
	lapic_timer_stop();
	if (used_idx(&bq) != bq.last_used || (have_rng && used_idx(&rq) != rq.last_used))
		kit_fail("more completions than requests");
	printf("virtio_snapshot: %lu rounds, %lu blk and %lu rng requests, each completed once, data verified "
	       "(%u blk interrupts, %u spurious)\n", rounds, blk_done, rng_done, blk_irqs, spurious);
	vdev_reset(&blk);
	kit_pass();
}
