"""The virtio ABI constants, declared once for the package.

Sources: the Virtual I/O Device (VIRTIO) Version 1.2 specification (cited as §n) and
Linux's include/uapi/linux/virtio_{config,ids,pci,ring,blk,net}.h, whose names these are;
the tap ones from include/uapi/linux/if_tun.h and if.h.
Nothing else in devices/virtio/ types a number of the ABI.
"""

from __future__ import annotations

# ---------------------------------------------------------------- virtio_ids.h (§5)
VIRTIO_ID_NET = 1
VIRTIO_ID_BLOCK = 2
VIRTIO_ID_RNG = 4

# ---------------------------------------------------------------- virtio_config.h (§2.1 status, §6 features)
VIRTIO_CONFIG_S_ACKNOWLEDGE = 1
VIRTIO_CONFIG_S_DRIVER = 2
VIRTIO_CONFIG_S_DRIVER_OK = 4
VIRTIO_CONFIG_S_FEATURES_OK = 8
VIRTIO_CONFIG_S_NEEDS_RESET = 0x40
VIRTIO_CONFIG_S_FAILED = 0x80

VIRTIO_F_NOTIFY_ON_EMPTY = 24            # legacy only: never offered
VIRTIO_F_ANY_LAYOUT = 27                 # legacy only: implied by VERSION_1
VIRTIO_RING_F_INDIRECT_DESC = 28         # virtio_ring.h (§2.7.5.3)
VIRTIO_RING_F_EVENT_IDX = 29             # virtio_ring.h (§2.7.7, §2.7.10)
VIRTIO_F_VERSION_1 = 32                  # §6: required of a modern device and driver
VIRTIO_F_ACCESS_PLATFORM = 33
VIRTIO_F_RING_PACKED = 34
VIRTIO_F_IN_ORDER = 35
VIRTIO_F_RING_RESET = 40                 # §2.6.1: per-queue reset (common cfg queue_reset)

# ---------------------------------------------------------------- virtio_ring.h (§2.7 split virtqueues)
VRING_DESC_F_NEXT = 1
VRING_DESC_F_WRITE = 2
VRING_DESC_F_INDIRECT = 4
VRING_USED_F_NO_NOTIFY = 1
VRING_AVAIL_F_NO_INTERRUPT = 1
VRING_DESC_ALIGN_SIZE = 16
VRING_AVAIL_ALIGN_SIZE = 2
VRING_USED_ALIGN_SIZE = 4
VRING_DESC_SIZE = 16                     # struct vring_desc: le64 addr, le32 len, le16 flags, le16 next
VRING_USED_ELEM_SIZE = 8                 # struct vring_used_elem: le32 id, le32 len
VIRTQUEUE_MAX_SIZE = 32768               # §2.7: "The maximum Queue Size value is 32768"

# ---------------------------------------------------------------- virtio_pci.h (§4.1)
PCI_VENDOR_ID_REDHAT_QUMRANET = 0x1AF4   # §4.1.2: every virtio PCI device
VIRTIO_PCI_MODERN_DEVICE_ID_BASE = 0x1040  # §4.1.2: 0x1040 + the virtio device ID
VIRTIO_PCI_MODERN_REVISION = 1           # §4.1.2.1: non-transitional devices SHOULD have revision >= 1
PCI_CAP_ID_VNDR = 0x09                   # pci_regs.h: vendor-specific capability

VIRTIO_PCI_CAP_COMMON_CFG = 1
VIRTIO_PCI_CAP_NOTIFY_CFG = 2
VIRTIO_PCI_CAP_ISR_CFG = 3
VIRTIO_PCI_CAP_DEVICE_CFG = 4
VIRTIO_PCI_CAP_PCI_CFG = 5

# struct virtio_pci_cap field offsets
VIRTIO_PCI_CAP_VNDR = 0
VIRTIO_PCI_CAP_NEXT = 1
VIRTIO_PCI_CAP_LEN = 2
VIRTIO_PCI_CAP_CFG_TYPE = 3
VIRTIO_PCI_CAP_BAR = 4
VIRTIO_PCI_CAP_ID = 5
VIRTIO_PCI_CAP_OFFSET = 8
VIRTIO_PCI_CAP_LENGTH = 12
VIRTIO_PCI_NOTIFY_CAP_MULT = 16          # struct virtio_pci_notify_cap
VIRTIO_PCI_CFG_CAP_DATA = 16             # struct virtio_pci_cfg_cap: pci_cfg_data[4]
VIRTIO_PCI_CAP_SIZE = 16
VIRTIO_PCI_NOTIFY_CAP_SIZE = 20
VIRTIO_PCI_CFG_CAP_SIZE = 20

# struct virtio_pci_common_cfg (§4.1.4.3), offsets as in virtio_pci.h
VIRTIO_PCI_COMMON_DFSELECT = 0
VIRTIO_PCI_COMMON_DF = 4
VIRTIO_PCI_COMMON_GFSELECT = 8
VIRTIO_PCI_COMMON_GF = 12
VIRTIO_PCI_COMMON_MSIX = 16
VIRTIO_PCI_COMMON_NUMQ = 18
VIRTIO_PCI_COMMON_STATUS = 20
VIRTIO_PCI_COMMON_CFGGENERATION = 21
VIRTIO_PCI_COMMON_Q_SELECT = 22
VIRTIO_PCI_COMMON_Q_SIZE = 24
VIRTIO_PCI_COMMON_Q_MSIX = 26
VIRTIO_PCI_COMMON_Q_ENABLE = 28
VIRTIO_PCI_COMMON_Q_NOFF = 30
VIRTIO_PCI_COMMON_Q_DESCLO = 32
VIRTIO_PCI_COMMON_Q_DESCHI = 36
VIRTIO_PCI_COMMON_Q_AVAILLO = 40
VIRTIO_PCI_COMMON_Q_AVAILHI = 44
VIRTIO_PCI_COMMON_Q_USEDLO = 48
VIRTIO_PCI_COMMON_Q_USEDHI = 52
VIRTIO_PCI_COMMON_Q_NDATA = 56
VIRTIO_PCI_COMMON_Q_RESET = 58
VIRTIO_PCI_COMMON_CFG_SIZE = 60

VIRTIO_PCI_ISR_QUEUE = 0x1               # §4.1.4.5: ISR bit 0, a used buffer notification
VIRTIO_PCI_ISR_CONFIG = 0x2              # bit 1, a configuration change notification
VIRTIO_MSI_NO_VECTOR = 0xFFFF

# ---------------------------------------------------------------- virtio_blk.h (§5.2)
VIRTIO_BLK_F_SIZE_MAX = 1
VIRTIO_BLK_F_SEG_MAX = 2
VIRTIO_BLK_F_GEOMETRY = 4
VIRTIO_BLK_F_RO = 5
VIRTIO_BLK_F_BLK_SIZE = 6
VIRTIO_BLK_F_FLUSH = 9
VIRTIO_BLK_F_TOPOLOGY = 10
VIRTIO_BLK_F_CONFIG_WCE = 11
VIRTIO_BLK_F_MQ = 12
VIRTIO_BLK_F_DISCARD = 13
VIRTIO_BLK_F_WRITE_ZEROES = 14

VIRTIO_BLK_T_IN = 0
VIRTIO_BLK_T_OUT = 1
VIRTIO_BLK_T_FLUSH = 4
VIRTIO_BLK_T_GET_ID = 8
VIRTIO_BLK_T_DISCARD = 11
VIRTIO_BLK_T_WRITE_ZEROES = 13

VIRTIO_BLK_S_OK = 0
VIRTIO_BLK_S_IOERR = 1
VIRTIO_BLK_S_UNSUPP = 2

VIRTIO_BLK_ID_BYTES = 20
VIRTIO_BLK_SECTOR_SIZE = 512             # §5.2.6: sector numbers are in 512-byte units
VIRTIO_BLK_OUTHDR_SIZE = 16              # struct virtio_blk_outhdr: le32 type, le32 ioprio, le64 sector
VIRTIO_BLK_DISCARD_SEG_SIZE = 16         # struct virtio_blk_discard_write_zeroes: le64, le32, le32
VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1

# struct virtio_blk_config field offsets (§5.2.4)
VIRTIO_BLK_CFG_CAPACITY = 0              # le64, in 512-byte sectors
VIRTIO_BLK_CFG_SIZE_MAX = 8
VIRTIO_BLK_CFG_SEG_MAX = 12
VIRTIO_BLK_CFG_GEOMETRY = 16
VIRTIO_BLK_CFG_BLK_SIZE = 20
VIRTIO_BLK_CFG_TOPOLOGY = 24
VIRTIO_BLK_CFG_WCE = 32
VIRTIO_BLK_CFG_NUM_QUEUES = 34
VIRTIO_BLK_CFG_MAX_DISCARD_SECTORS = 36
VIRTIO_BLK_CFG_MAX_DISCARD_SEG = 40
VIRTIO_BLK_CFG_DISCARD_SECTOR_ALIGNMENT = 44
VIRTIO_BLK_CFG_MAX_WRITE_ZEROES_SECTORS = 48
VIRTIO_BLK_CFG_MAX_WRITE_ZEROES_SEG = 52
VIRTIO_BLK_CFG_WRITE_ZEROES_MAY_UNMAP = 56
VIRTIO_BLK_CFG_SIZE = 60                 # up to unused1[3]; no secure erase

# ---------------------------------------------------------------- virtio_net.h (§5.1)
VIRTIO_NET_F_CSUM = 0                    # the device takes packets with a partial checksum (not offered)
VIRTIO_NET_F_GUEST_CSUM = 1              # the driver takes them (not offered)
VIRTIO_NET_F_MTU = 3
VIRTIO_NET_F_MAC = 5                     # the device has a MAC address in its config
VIRTIO_NET_F_GUEST_TSO4 = 7
VIRTIO_NET_F_GUEST_TSO6 = 8
VIRTIO_NET_F_GUEST_ECN = 9
VIRTIO_NET_F_GUEST_UFO = 10
VIRTIO_NET_F_HOST_TSO4 = 11
VIRTIO_NET_F_HOST_TSO6 = 12
VIRTIO_NET_F_HOST_ECN = 13
VIRTIO_NET_F_HOST_UFO = 14
VIRTIO_NET_F_MRG_RXBUF = 15              # a received packet may span several receive buffers
VIRTIO_NET_F_STATUS = 16                 # config.status holds the link state
VIRTIO_NET_F_CTRL_VQ = 17
VIRTIO_NET_F_MQ = 22

VIRTIO_NET_S_LINK_UP = 1                 # config.status

VIRTIO_NET_HDR_F_NEEDS_CSUM = 1          # struct virtio_net_hdr flags
VIRTIO_NET_HDR_F_DATA_VALID = 2
VIRTIO_NET_HDR_F_RSC_INFO = 4
VIRTIO_NET_HDR_GSO_NONE = 0              # gso_type
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_UDP = 3
VIRTIO_NET_HDR_GSO_TCPV6 = 4
VIRTIO_NET_HDR_GSO_ECN = 0x80

# struct virtio_net_hdr_v1 (§5.1.6): u8 flags, u8 gso_type, le16 hdr_len, le16 gso_size,
# le16 csum_start, le16 csum_offset, le16 num_buffers.  VERSION_1 makes num_buffers present
# whatever MRG_RXBUF says (§5.1.6.1), so the header is always these 12 bytes.
VIRTIO_NET_HDR_FLAGS = 0
VIRTIO_NET_HDR_GSO_TYPE = 1
VIRTIO_NET_HDR_NUM_BUFFERS = 10
VIRTIO_NET_HDR_V1_SIZE = 12

# struct virtio_net_config field offsets (§5.1.4)
VIRTIO_NET_CFG_MAC = 0                   # u8 mac[6]
VIRTIO_NET_CFG_STATUS = 6                # le16
VIRTIO_NET_CFG_MAX_VIRTQUEUE_PAIRS = 8   # le16 (meaningful with MQ only)
VIRTIO_NET_CFG_SIZE = 10

ETH_ALEN = 6                             # if_ether.h
ETH_HLEN = 14
VIRTIO_NET_MAX_PACKET = 65550            # §5.1.6.3.1: 65562-byte buffers minus the 12-byte header

# ---------------------------------------------------------------- if_tun.h, if.h (the tap backend)
IFNAMSIZ = 16                            # if.h: names are at most 15 bytes and a NUL
IFREQ_SIZE = 40                          # sizeof(struct ifreq) on x86-64: name[16], then a 24-byte union
IFREQ_FLAGS = 16                         # ifr_flags (short) in that union
TUNSETIFF = 0x400454CA                   # _IOW('T', 202, int)
TUNSETOFFLOAD = 0x400454D0               # _IOW('T', 208, unsigned int)
TUNSETVNETHDRSZ = 0x400454D8             # _IOW('T', 216, int)
TUNGETVNETHDRSZ = 0x800454D7             # _IOR('T', 215, int)
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01                        # TUNSETOFFLOAD bits: what the tap may hand us
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_UFO = 0x10


def bit(n: int) -> int:
    """A feature number as its bit."""
    return 1 << n
