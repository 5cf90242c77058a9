/*
 * virtio_net: virtio-net on a host tap (vmm run --net tap=NAME[,mac=...]).
 *
 * The test gives the tap 192.168.76.1/24 (in a network namespace); we are
 * 192.168.76.2.  Finds the device (1af4:1041), negotiates VERSION_1, MAC, STATUS,
 * MRG_RXBUF, EVENT_IDX, reads the MAC and the link status from the device
 * configuration, sets up receiveq0 (MSI-X entry 0) and transmitq0 (entry 1), posts
 * eight receive buffers of 32 bytes (so a frame spans several: num_buffers), then
 *   sends an ARP request for 192.168.76.1 (header and frame in two descriptors)
 *   and waits for the host's ARP reply: its MAC, our addresses;
 *   sends an ICMP echo request to that MAC and waits for the echo reply (same id,
 *   sequence and 56-byte payload, a valid IP header checksum).
 * Frames we didn't ask for are counted and skipped.
 * cmdline "nomrg": MRG_RXBUF not negotiated, 1526-byte buffers (num_buffers 1).
 * cmdline "flood": post no receive buffers, say so, and wait for a line on COM1 (the
 * host floods the tap meanwhile), then post eight 1526-byte buffers and take eight
 * of the host's frames (ethertype 0x88b5, payload bytes 0x5a), then the ARP exchange.
 */
#include "kit.h"
#include "virtio.h"

#define IOAPIC_BASE	0xfec00000UL
#define VEC_RX		0x50
#define VEC_TX		0x51
#define VEC_CONFIG	0x52
#define VEC_SERIAL	0x34

#define F_MAC		(1ull << 5)
#define F_MRG_RXBUF	(1ull << 15)
#define F_STATUS	(1ull << 16)
#define S_LINK_UP	1
#define HDR		12	/* struct virtio_net_hdr_v1 */
#define BIG		1526	/* §5.1.6.3.1: a buffer without MRG_RXBUF */
#define ETH_P_ARP	0x0806
#define ETH_P_IP	0x0800
#define ETH_P_FLOOD	0x88b5
#define PAYLOAD		56

struct net_hdr { uint8_t flags, gso_type; uint16_t hdr_len, gso_size, csum_start, csum_offset, num_buffers; }
	__attribute__((packed));

static struct vdev dev;
static struct vq rxq, txq;
static struct vq_mem rxmem, txmem;
static uint8_t rxbuf[VQ_SIZE][BIG];
static uint32_t rxsize;
static struct net_hdr txhdr;
static uint8_t txframe[128], pkt[2048];
static uint8_t mac[6], host_mac[6];
static const uint8_t my_ip[4] = {192, 168, 76, 2}, host_ip[4] = {192, 168, 76, 1};
static volatile int rx_irqs, tx_irqs, line_done;
static int skipped;
static bool mrg;

static void rx_irq(struct kit_frame *f) { (void)f; rx_irqs++; lapic_eoi(); }
static void tx_irq(struct kit_frame *f) { (void)f; tx_irqs++; lapic_eoi(); }
static void config_irq(struct kit_frame *f) { (void)f; kit_fail("configuration interrupt: status %#x", vdev_status(&dev)); }
static void serial_irq(struct kit_frame *f)
{
	(void)f;
	while (inb(KIT_COM1 + 5) & 0x01)
		if (inb(KIT_COM1) == '\n')
			line_done = 1;
	lapic_eoi();
}

static void ioapic_write(unsigned reg, uint32_t v)
{
	*(volatile uint32_t *)IOAPIC_BASE = reg;
	*(volatile uint32_t *)(IOAPIC_BASE + 0x10) = v;
}

static void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = (uint8_t)v; }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static uint16_t csum(const uint8_t *p, int n)
{
	uint32_t s = 0;
	for (int i = 0; i + 1 < n; i += 2)
		s += get16(p + i);
	if (n & 1)
		s += (uint32_t)p[n - 1] << 8;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

static void post_rx(uint16_t i)
{
	vdesc(rxmem.desc, i, rxbuf[i], rxsize, VRING_DESC_F_WRITE, 0);
	vq_post(&rxq, i);
}

/* Send LEN bytes of txframe: the header and the frame in two descriptors. */
static void send(int len)
{
	uint32_t used;
	memset(&txhdr, 0, sizeof(txhdr));
	vdesc(txmem.desc, 0, &txhdr, HDR, VRING_DESC_F_NEXT, 1);
	vdesc(txmem.desc, 1, txframe, len, 0, 0);
	vq_kick(&txq, 0);
	if (!KIT_WAIT_FOR(vq_has_used(&txq), 2000))
		kit_fail("transmit: no used buffer");
	KIT_ASSERT(vq_take(&txq, &used) == 0 && used == 0);
}

/* The next frame into pkt (without the header); its length, and how many buffers it took. */
static int receive(int *nbufs)
{
	uint32_t len;
	if (!KIT_WAIT_FOR(vq_has_used(&rxq), 20000))
		kit_fail("no frame received (%d interrupts)", rx_irqs);
	uint16_t id = vq_take(&rxq, &len);
	KIT_ASSERT(id < VQ_SIZE && len >= HDR && len <= rxsize);
	struct net_hdr *h = (struct net_hdr *)rxbuf[id];
	int nb = h->num_buffers;
	if (h->flags || h->gso_type || nb < 1 || nb > VQ_SIZE || (!mrg && nb != 1))
		kit_fail("header: flags %#x gso %#x num_buffers %d", h->flags, h->gso_type, nb);
	int total = len - HDR;
	memcpy(pkt, rxbuf[id] + HDR, total);
	post_rx(id);
	for (int k = 1; k < nb; k++) {
		if (!KIT_WAIT_FOR(vq_has_used(&rxq), 2000))
			kit_fail("buffer %d of %d missing", k + 1, nb);
		id = vq_take(&rxq, &len);
		KIT_ASSERT(id < VQ_SIZE && len <= rxsize && total + len <= sizeof(pkt));
		memcpy(pkt + total, rxbuf[id], len);
		total += len;
		post_rx(id);
	}
	vq_notify(&rxq);
	*nbufs = nb;
	return total;
}

static void eth(uint8_t *f, const uint8_t *dst, uint16_t type)
{
	memcpy(f, dst, 6);
	memcpy(f + 6, mac, 6);
	put16(f + 12, type);
}

static void arp(void)
{
	static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	uint8_t *a = txframe + 14;
	int n, nb;

	memset(txframe, 0, sizeof(txframe));
	eth(txframe, bcast, ETH_P_ARP);
	put16(a, 1);			/* Ethernet */
	put16(a + 2, ETH_P_IP);
	a[4] = 6;
	a[5] = 4;
	put16(a + 6, 1);		/* request */
	memcpy(a + 8, mac, 6);
	memcpy(a + 14, my_ip, 4);
	memcpy(a + 24, host_ip, 4);
	send(42);
	for (;;) {
		n = receive(&nb);
		const uint8_t *r = pkt + 14;
		if (n >= 42 && get16(pkt + 12) == ETH_P_ARP && get16(r + 6) == 2 && !memcmp(r + 14, host_ip, 4))
			break;
		skipped++;
	}
	const uint8_t *r = pkt + 14;
	KIT_ASSERT(!memcmp(pkt, mac, 6) && !memcmp(r + 18, mac, 6) && !memcmp(r + 24, my_ip, 4));
	KIT_ASSERT(!memcmp(pkt + 6, r + 8, 6));
	memcpy(host_mac, r + 8, 6);
	printf("virtio_net: ARP reply: 192.168.76.1 is at %02x:%02x:%02x:%02x:%02x:%02x (%d bytes in %d buffers)\n",
	       host_mac[0], host_mac[1], host_mac[2], host_mac[3], host_mac[4], host_mac[5], n, nb);
}

static void ping(void)
{
	uint8_t *ip = txframe + 14, *icmp = ip + 20;
	int n, nb;

	memset(txframe, 0, sizeof(txframe));
	eth(txframe, host_mac, ETH_P_IP);
	ip[0] = 0x45;
	put16(ip + 2, 20 + 8 + PAYLOAD);
	put16(ip + 4, 1);
	put16(ip + 6, 0x4000);		/* DF */
	ip[8] = 64;
	ip[9] = 1;			/* ICMP */
	memcpy(ip + 12, my_ip, 4);
	memcpy(ip + 16, host_ip, 4);
	put16(ip + 10, csum(ip, 20));
	icmp[0] = 8;			/* echo request */
	put16(icmp + 4, 0x4d56);
	put16(icmp + 6, 1);
	for (int i = 0; i < PAYLOAD; i++)
		icmp[8 + i] = (uint8_t)(i * 3 + 1);
	put16(icmp + 2, csum(icmp, 8 + PAYLOAD));
	send(14 + 20 + 8 + PAYLOAD);
	for (;;) {
		n = receive(&nb);
		const uint8_t *rip = pkt + 14, *ricmp = rip + 20;
		if (n >= 14 + 20 + 8 + PAYLOAD && get16(pkt + 12) == ETH_P_IP && rip[9] == 1 && ricmp[0] == 0 &&
		    get16(ricmp + 4) == 0x4d56 && get16(ricmp + 6) == 1)
			break;
		skipped++;
	}
	const uint8_t *rip = pkt + 14, *ricmp = rip + 20;
	KIT_ASSERT(!memcmp(pkt, mac, 6) && !memcmp(pkt + 6, host_mac, 6));
	KIT_ASSERT(!memcmp(rip + 12, host_ip, 4) && !memcmp(rip + 16, my_ip, 4));
	KIT_ASSERT(csum(rip, 20) == 0 && csum(ricmp, 8 + PAYLOAD) == 0);
	KIT_ASSERT(!memcmp(ricmp + 8, icmp + 8, PAYLOAD));
	printf("virtio_net: ICMP echo reply from 192.168.76.1: %d bytes in %d buffers\n", n, nb);
}

static void flood(void)
{
	int n, nb, got = 0;

	printf("virtio_net: no receive buffers posted; waiting for a line on COM1\n");
	kit_set_handler(VEC_SERIAL, serial_irq);
	ioapic_write(0x10 + 2 * 4 + 1, lapic_id() << 24);
	ioapic_write(0x10 + 2 * 4, VEC_SERIAL);
	outb(KIT_COM1 + 1, 0x01);
	if (!KIT_WAIT_FOR(line_done, 1000000))
		kit_fail("no line on COM1");
	for (uint16_t i = 0; i < VQ_SIZE; i++)
		post_rx(i);
	vq_notify(&rxq);
	while (got < 8) {
		n = receive(&nb);
		if (get16(pkt + 12) != ETH_P_FLOOD) {
			skipped++;
			continue;
		}
		KIT_ASSERT(!memcmp(pkt, mac, 6) && n > 14);
		for (int i = 14; i < n; i++)
			KIT_ASSERT(pkt[i] == 0x5a);
		got++;
	}
	printf("virtio_net: buffers posted: %d flood frames of %d bytes received\n", got, n);
}

void kit_main(void)
{
	bool flooding = kit_cmdline_has("flood");
	mrg = !kit_cmdline_has("nomrg");
	rxsize = mrg && !flooding ? 32 : BIG;
	printf("virtio_net: virtio-net on a tap (%s, %u-byte receive buffers%s)\n", mrg ? "MRG_RXBUF" : "no MRG_RXBUF",
	       rxsize, flooding ? ", flood" : "");
	if (!vdev_find(&dev, VIRTIO_ID_NET, 0))
		kit_fail("no virtio-net device (run with --net tap=NAME)");
	KIT_ASSERT(dev.device && dev.msix);
	KIT_ASSERT(vcfg_read16(dev.slot, 0x0a) == 0x0200);		/* class: Ethernet controller */

	outb(0x21, 0xff);
	outb(0xa1, 0xff);
	lapic_enable();
	uint32_t apic = lapic_id();
	uint64_t wanted = VF_VERSION_1 | VF_EVENT_IDX | F_MAC | F_STATUS | (mrg ? F_MRG_RXBUF : 0);
	if (!vdev_negotiate(&dev, wanted))
		kit_fail("features refused");
	if (dev.features != wanted)
		kit_fail("features offered %#lx, wanted %#lx", dev.offered, wanted);
	for (int i = 0; i < 6; i++)
		mac[i] = dev.device[i];
	uint16_t status = *(volatile uint16_t *)(dev.device + 6);
	printf("virtio_net: MAC %02x:%02x:%02x:%02x:%02x:%02x, status %#x (link %s)\n", mac[0], mac[1], mac[2],
	       mac[3], mac[4], mac[5], status, status & S_LINK_UP ? "up" : "down");
	KIT_ASSERT(status & S_LINK_UP);
	KIT_ASSERT(vc_read16(&dev, VC_NUMQ) == 2);

	kit_set_handler(VEC_RX, rx_irq);
	kit_set_handler(VEC_TX, tx_irq);
	kit_set_handler(VEC_CONFIG, config_irq);
	vdev_msix_entry(&dev, 0, apic, VEC_RX);
	vdev_msix_entry(&dev, 1, apic, VEC_TX);
	vdev_msix_entry(&dev, 2, apic, VEC_CONFIG);
	vdev_msix_enable(&dev, true);
	vc_write16(&dev, VC_MSIX, 2);
	if (!vq_setup(&dev, &rxq, 0, &rxmem, 0) || !vq_setup(&dev, &txq, 1, &txmem, 1))
		kit_fail("queue setup failed");
	if (!flooding)
		for (uint16_t i = 0; i < VQ_SIZE; i++)
			post_rx(i);
	vdev_driver_ok(&dev);
	if (!flooding)
		vq_notify(&rxq);
	else
		flood();

	arp();
	ping();
	printf("virtio_net: %d frames skipped, %d receive and %d transmit interrupts\n", skipped, rx_irqs, tx_irqs);
	KIT_ASSERT(rx_irqs > 0 && tx_irqs > 0);
	vdev_reset(&dev);
	kit_pass();
}
