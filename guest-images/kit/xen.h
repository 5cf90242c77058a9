/*
 * xen.h - Xen HVM guest library for kit guests (tests/xen_*.c).
 *
 * The ABI below mirrors xen-project/xen xen/include/public/ (xen.h,
 * arch-x86/xen.h, arch-x86/xen-x86_64.h, arch-x86/cpuid.h, event_channel.h,
 * memory.h, version.h, vcpu.h, sched.h, grant_table.h, features.h,
 * hvm/hvm_op.h, hvm/params.h, errno.h).  Offsets and sizes are checked with
 * _Static_assert at the end of the file.  Everything here is the 64-bit
 * (x86_64) layout unless the name says compat.
 *
 * The code lives in kit/xen/ and is linked from an archive, so a guest that
 * does not include this header pays nothing (see guest-images/Makefile).
 *
 * Conventions:
 *   - hypercall wrappers return Xen's value: >= 0, or -errno (XEN_E*).
 *   - pointers passed to hypercalls are guest-VIRTUAL addresses; the kit
 *     identity-maps 0-4 GiB, and xen_map_4k() maps extra 4 KiB pages at
 *     XEN_KIT_VA_WINDOW to test translation.
 *   - per-CPU state is indexed by LAPIC id (< KIT_MAX_CPUS).
 */
#ifndef KIT_XEN_H
#define KIT_XEN_H

#include "kit.h"

/* ---- Errno values (xen/include/public/errno.h; equal to Linux's on x86) ---- */
#define XEN_EPERM	1
#define XEN_ENOENT	2
#define XEN_ESRCH	3
#define XEN_EIO		5
#define XEN_E2BIG	7
#define XEN_EAGAIN	11
#define XEN_ENOMEM	12
#define XEN_EACCES	13
#define XEN_EFAULT	14
#define XEN_EBUSY	16
#define XEN_EEXIST	17
#define XEN_ENODEV	19
#define XEN_EINVAL	22
#define XEN_ENOSPC	28
#define XEN_EDOM	33
#define XEN_ERANGE	34
#define XEN_ENOSYS	38
#define XEN_ENODATA	61
#define XEN_ETIME	62
#define XEN_EILSEQ	84
#define XEN_EOPNOTSUPP	95
#define XEN_ENOBUFS	105

/* ---- Hypercall numbers (public/xen.h) ----------------------------------- */
#define __HYPERVISOR_set_trap_table		0
#define __HYPERVISOR_mmu_update			1
#define __HYPERVISOR_set_gdt			2
#define __HYPERVISOR_stack_switch		3
#define __HYPERVISOR_set_callbacks		4
#define __HYPERVISOR_fpu_taskswitch		5
#define __HYPERVISOR_sched_op_compat		6
#define __HYPERVISOR_platform_op		7
#define __HYPERVISOR_set_debugreg		8
#define __HYPERVISOR_get_debugreg		9
#define __HYPERVISOR_update_descriptor		10
#define __HYPERVISOR_memory_op			12
#define __HYPERVISOR_multicall			13
#define __HYPERVISOR_update_va_mapping		14
#define __HYPERVISOR_set_timer_op		15
#define __HYPERVISOR_event_channel_op_compat	16
#define __HYPERVISOR_xen_version		17
#define __HYPERVISOR_console_io			18
#define __HYPERVISOR_physdev_op_compat		19
#define __HYPERVISOR_grant_table_op		20
#define __HYPERVISOR_vm_assist			21
#define __HYPERVISOR_update_va_mapping_otherdomain 22
#define __HYPERVISOR_iret			23	/* ud2 in Xen's HVM page: never call */
#define __HYPERVISOR_vcpu_op			24
#define __HYPERVISOR_set_segment_base		25
#define __HYPERVISOR_mmuext_op			26
#define __HYPERVISOR_xsm_op			27
#define __HYPERVISOR_nmi_op			28
#define __HYPERVISOR_sched_op			29
#define __HYPERVISOR_callback_op		30
#define __HYPERVISOR_xenoprof_op		31
#define __HYPERVISOR_event_channel_op		32
#define __HYPERVISOR_physdev_op			33
#define __HYPERVISOR_hvm_op			34
#define __HYPERVISOR_sysctl			35
#define __HYPERVISOR_domctl			36
#define __HYPERVISOR_kexec_op			37
#define __HYPERVISOR_tmem_op			38
#define __HYPERVISOR_xc_reserved_op		39
#define __HYPERVISOR_xenpmu_op			40
#define __HYPERVISOR_dm_op			41
#define __HYPERVISOR_hypfs_op			42
#define __HYPERVISOR_arch_0			48
#define __HYPERVISOR_arch_7			55
#define XEN_HYPERCALL_PAGE_ENTRIES		128	/* 4096 / 32 */

/* ---- Domain ids, VIRQs, misc (public/xen.h) ------------------------------ */
typedef uint16_t domid_t;
#define DOMID_FIRST_RESERVED	0x7FF0U
#define DOMID_SELF		0x7FF0U

#define VIRQ_TIMER	0	/* V. per-vCPU */
#define VIRQ_DEBUG	1	/* V. per-vCPU */
#define VIRQ_CONSOLE	2	/* G. */
#define VIRQ_DOM_EXC	3	/* G. */
#define VIRQ_XENOPROF	7	/* V. */
#define VIRQ_XENPMU	13	/* V. */
#define NR_VIRQS	24

#define CONSOLEIO_write	0
#define CONSOLEIO_read	1

#define VMASST_CMD_enable		0
#define VMASST_CMD_disable		1
#define VMASST_TYPE_4gb_segments	0
#define VMASST_TYPE_writable_pagetables	2
#define VMASST_TYPE_runstate_update_flag 5

/* public/arch-x86/xen-x86_64.h */
#define XEN_HYPERVISOR_VIRT_START_64	0xFFFF800000000000ULL

/* ---- CPUID leaves (public/arch-x86/cpuid.h) ------------------------------- */
#define XEN_CPUID_FIRST_LEAF		0x40000000
#define XEN_CPUID_LAST_BASE		0x4000FF00
#define XEN_HVM_CPUID_APIC_ACCESS_VIRT	(1u << 0)
#define XEN_HVM_CPUID_X2APIC_VIRT	(1u << 1)
#define XEN_HVM_CPUID_IOMMU_MAPPINGS	(1u << 2)
#define XEN_HVM_CPUID_VCPU_ID_PRESENT	(1u << 3)	/* EBX = vcpu id */
#define XEN_HVM_CPUID_DOMID_PRESENT	(1u << 4)	/* ECX = domid */
#define XEN_HVM_CPUID_EXT_DEST_ID	(1u << 5)
#define XEN_HVM_CPUID_UPCALL_VECTOR	(1u << 6)

/* ---- Shared structures (public/xen.h, arch-x86/xen.h) --------------------- */
#define XEN_LEGACY_MAX_VCPUS	32

struct vcpu_time_info {
	uint32_t version;	/* odd while the hypervisor updates */
	uint32_t pad0;
	uint64_t tsc_timestamp;	/* TSC at last update */
	uint64_t system_time;	/* ns since boot at tsc_timestamp */
	uint32_t tsc_to_system_mul;
	int8_t   tsc_shift;
	uint8_t  flags;		/* XEN_PVCLOCK_* (interface > 0x040600) */
	uint8_t  pad1[2];
};
#define XEN_PVCLOCK_TSC_STABLE_BIT	(1 << 0)
#define XEN_PVCLOCK_GUEST_STOPPED	(1 << 1)

struct arch_vcpu_info {
	uint64_t cr2;
	uint64_t pad;
};

struct vcpu_info {
	uint8_t evtchn_upcall_pending;
	uint8_t evtchn_upcall_mask;	/* ignored by Xen for HVM (hvm/irq.c) */
	uint8_t pad[6];
	uint64_t evtchn_pending_sel;
	struct arch_vcpu_info arch;
	struct vcpu_time_info time;
};

struct arch_shared_info {
	uint64_t max_pfn;
	uint64_t pfn_to_mfn_frame_list_list;
	uint64_t nmi_reason;
	uint64_t p2m_cr3;
	uint64_t p2m_vaddr;
	uint64_t p2m_generation;
};

struct shared_info {
	struct vcpu_info vcpu_info[XEN_LEGACY_MAX_VCPUS];
	uint64_t evtchn_pending[64];
	uint64_t evtchn_mask[64];
	uint32_t wc_version;
	uint32_t wc_sec;
	uint32_t wc_nsec;
	uint32_t wc_sec_hi;	/* x86_64 only */
	struct arch_shared_info arch;
};

/* 2-level ABI: 64 * 64 ports for a 64-bit guest (1024 for a 32-bit one). */
#define EVTCHN_2L_NR_CHANNELS	4096

/* ---- xen_version (public/version.h) --------------------------------------- */
#define XENVER_version			0
#define XENVER_extraversion		1	/* char[16] */
#define XENVER_compile_info		2
#define XENVER_capabilities		3	/* char[1024] */
#define XENVER_changeset		4	/* char[64] */
#define XENVER_platform_parameters	5
#define XENVER_get_features		6
#define XENVER_pagesize			7
#define XENVER_guest_handle		8	/* uint8_t[16] */
#define XENVER_commandline		9	/* char[1024] */
#define XENVER_build_id			10

struct xen_compile_info {
	char compiler[64];
	char compile_by[16];
	char compile_domain[32];
	char compile_date[32];
};
struct xen_platform_parameters {
	uint64_t virt_start;
};
struct xen_feature_info {
	uint32_t submap_idx;
	uint32_t submap;
};
struct xen_build_id {
	uint32_t len;
	uint8_t buf[];
};

/* public/features.h */
#define XENFEAT_writable_page_tables		0
#define XENFEAT_writable_descriptor_tables	1
#define XENFEAT_auto_translated_physmap		2
#define XENFEAT_supervisor_mode_kernel		3
#define XENFEAT_pae_pgdir_above_4gb		4
#define XENFEAT_mmu_pt_update_preserve_ad	5
#define XENFEAT_highmem_assist			6
#define XENFEAT_gnttab_map_avail_bits		7
#define XENFEAT_hvm_callback_vector		8
#define XENFEAT_hvm_safe_pvclock		9
#define XENFEAT_hvm_pirqs			10
#define XENFEAT_dom0				11
#define XENFEAT_memory_op_vnode_supported	13

/* ---- memory_op (public/memory.h) ------------------------------------------ */
#define XENMEM_increase_reservation	0
#define XENMEM_decrease_reservation	1
#define XENMEM_maximum_ram_page		2
#define XENMEM_current_reservation	3
#define XENMEM_maximum_reservation	4
#define XENMEM_machphys_mfn_list	5
#define XENMEM_populate_physmap		6
#define XENMEM_add_to_physmap		7
#define XENMEM_memory_map		9
#define XENMEM_machine_memory_map	10
#define XENMEM_exchange			11
#define XENMEM_machphys_mapping		12
#define XENMEM_maximum_gpfn		14
#define XENMEM_remove_from_physmap	15
#define XENMEM_add_to_physmap_batch	23
#define MEMOP_EXTENT_SHIFT		6

#define XENMAPSPACE_shared_info		0
#define XENMAPSPACE_grant_table		1
#define XENMAPSPACE_gmfn		2
#define XENMAPSPACE_gmfn_range		3
#define XENMAPSPACE_gmfn_foreign	4
#define XENMAPSPACE_dev_mmio		5
#define XENMAPIDX_grant_table_status	0x80000000U

struct xen_memory_reservation {
	uint64_t extent_start;		/* handle: xen_pfn_t[] (GPFNs for HVM) */
	uint64_t nr_extents;
	uint32_t extent_order;
	uint32_t mem_flags;
	domid_t domid;
};
struct xen_add_to_physmap {
	domid_t domid;
	uint16_t size;			/* gmfn_range only */
	uint32_t space;
	uint64_t idx;
	uint64_t gpfn;
};
struct xen_add_to_physmap_batch {
	domid_t domid;
	uint16_t space;
	uint16_t size;
	uint16_t res0;			/* u.foreign_domid for gmfn_foreign */
	uint64_t idxs;			/* handle: xen_ulong_t[] */
	uint64_t gpfns;			/* handle: xen_pfn_t[] */
	uint64_t errs;			/* handle: int[] (OUT) */
};
struct xen_memory_map {
	uint32_t nr_entries;		/* IN: buffer size, OUT: entries written */
	uint32_t pad;
	uint64_t buffer;		/* handle: struct xen_e820_entry[] */
};
struct xen_e820_entry {			/* Xen's struct e820entry: packed, 20 bytes */
	uint64_t addr;
	uint64_t size;
	uint32_t type;
} __attribute__((packed));

/* ---- hvm_op (public/hvm/hvm_op.h, hvm/params.h) ---------------------------- */
#define HVMOP_set_param			0
#define HVMOP_get_param			1
#define HVMOP_pagetable_dying		9
#define HVMOP_set_evtchn_upcall_vector	23

#define HVM_PARAM_CALLBACK_IRQ		0
#define HVM_PARAM_STORE_PFN		1
#define HVM_PARAM_STORE_EVTCHN		2
#define HVM_PARAM_CONSOLE_PFN		17
#define HVM_PARAM_CONSOLE_EVTCHN	18
/* CALLBACK_IRQ value: type in bits 63:56 */
#define HVM_PARAM_CALLBACK_IRQ_TYPE_SHIFT 56
#define HVM_PARAM_CALLBACK_TYPE_GSI	0	/* val[55:0] = GSI */
#define HVM_PARAM_CALLBACK_TYPE_PCI_INTX 1	/* domain 47:32, bus 31:16, devfn 15:8, pin 1:0 */
#define HVM_PARAM_CALLBACK_TYPE_VECTOR	2	/* val[7:0] = vector */
#define HVM_CALLBACK_GSI(gsi)		((uint64_t)(gsi))
#define HVM_CALLBACK_VECTOR(v)		(((uint64_t)HVM_PARAM_CALLBACK_TYPE_VECTOR << 56) | (v))
#define HVM_CALLBACK_PCI_INTX(seg, bus, devfn, pin) \
	(((uint64_t)HVM_PARAM_CALLBACK_TYPE_PCI_INTX << 56) | ((uint64_t)(seg) << 32) | \
	 ((uint64_t)(bus) << 16) | ((uint64_t)(devfn) << 8) | (((pin) - 1) & 3))

struct xen_hvm_param {
	domid_t domid;
	uint16_t pad;
	uint32_t index;
	uint64_t value;
};
struct xen_hvm_evtchn_upcall_vector {
	uint32_t vcpu;
	uint8_t vector;
	uint8_t pad[3];
};
struct xen_hvm_pagetable_dying {
	domid_t domid;
	uint16_t pad[3];
	uint64_t gpa;
};

/* ---- vcpu_op (public/vcpu.h) ----------------------------------------------- */
#define VCPUOP_initialise			0
#define VCPUOP_up				1
#define VCPUOP_down				2
#define VCPUOP_is_up				3
#define VCPUOP_get_runstate_info		4
#define VCPUOP_register_runstate_memory_area	5
#define VCPUOP_set_periodic_timer		6
#define VCPUOP_stop_periodic_timer		7
#define VCPUOP_set_singleshot_timer		8
#define VCPUOP_stop_singleshot_timer		9
#define VCPUOP_register_vcpu_info		10
#define VCPUOP_send_nmi				11
#define VCPUOP_get_physid			12
#define VCPUOP_register_vcpu_time_memory_area	13
#define VCPU_SSHOTTMR_future			(1U << 0)

#define RUNSTATE_running	0
#define RUNSTATE_runnable	1
#define RUNSTATE_blocked	2
#define RUNSTATE_offline	3
#define XEN_RUNSTATE_UPDATE	(1ULL << 63)

struct vcpu_runstate_info {
	int32_t state;
	uint32_t pad;
	uint64_t state_entry_time;
	uint64_t time[4];
};
struct vcpu_register_runstate_memory_area {
	uint64_t addr;			/* guest virtual address */
};
struct vcpu_register_time_memory_area {
	uint64_t addr;
};
struct vcpu_register_vcpu_info {
	uint64_t mfn;			/* GFN for HVM */
	uint32_t offset;
	uint32_t rsvd;
};
struct vcpu_set_periodic_timer {
	uint64_t period_ns;
};
struct vcpu_set_singleshot_timer {
	uint64_t timeout_abs_ns;	/* Xen system time (pvclock) */
	uint32_t flags;
	uint32_t pad;
};

/* ---- sched_op (public/sched.h) --------------------------------------------- */
#define SCHEDOP_yield		0
#define SCHEDOP_block		1
#define SCHEDOP_shutdown	2
#define SCHEDOP_poll		3
#define SCHEDOP_remote_shutdown	4
#define SCHEDOP_shutdown_code	5
#define SCHEDOP_watchdog	6
#define SCHEDOP_pin_override	7

#define SHUTDOWN_poweroff	0
#define SHUTDOWN_reboot		1
#define SHUTDOWN_suspend	2
#define SHUTDOWN_crash		3
#define SHUTDOWN_watchdog	4
#define SHUTDOWN_soft_reset	5

struct sched_shutdown {
	uint32_t reason;
};
struct sched_poll {
	uint64_t ports;			/* handle: evtchn_port_t[] */
	uint32_t nr_ports;		/* > 128: -EINVAL (sched/core.c do_poll) */
	uint32_t pad;
	uint64_t timeout;		/* absolute Xen system time, 0 = none */
};
/* The 32-bit (compat) layout: 4-byte handle, 4-byte aligned uint64_t. */
struct compat_sched_poll {
	uint32_t ports;
	uint32_t nr_ports;
	uint32_t timeout_lo, timeout_hi;
};

/* ---- event_channel_op (public/event_channel.h) ------------------------------ */
typedef uint32_t evtchn_port_t;
#define EVTCHNOP_bind_interdomain	0
#define EVTCHNOP_bind_virq		1
#define EVTCHNOP_bind_pirq		2
#define EVTCHNOP_close			3
#define EVTCHNOP_send			4
#define EVTCHNOP_status			5
#define EVTCHNOP_alloc_unbound		6
#define EVTCHNOP_bind_ipi		7
#define EVTCHNOP_bind_vcpu		8
#define EVTCHNOP_unmask			9
#define EVTCHNOP_reset			10
#define EVTCHNOP_init_control		11
#define EVTCHNOP_expand_array		12
#define EVTCHNOP_set_priority		13

#define EVTCHNSTAT_closed	0
#define EVTCHNSTAT_unbound	1
#define EVTCHNSTAT_interdomain	2
#define EVTCHNSTAT_pirq		3
#define EVTCHNSTAT_virq		4
#define EVTCHNSTAT_ipi		5

struct evtchn_alloc_unbound { domid_t dom, remote_dom; evtchn_port_t port; };
struct evtchn_bind_interdomain { domid_t remote_dom; uint16_t pad; evtchn_port_t remote_port, local_port; };
struct evtchn_bind_virq { uint32_t virq, vcpu; evtchn_port_t port; };
struct evtchn_bind_ipi { uint32_t vcpu; evtchn_port_t port; };
struct evtchn_close { evtchn_port_t port; };
struct evtchn_send { evtchn_port_t port; };
struct evtchn_status {
	domid_t dom;
	uint16_t pad;
	evtchn_port_t port;
	uint32_t status;
	uint32_t vcpu;
	union {
		struct { domid_t dom; } unbound;
		struct { domid_t dom; uint16_t pad; evtchn_port_t port; } interdomain;
		uint32_t pirq;
		uint32_t virq;
	} u;
};
struct evtchn_bind_vcpu { evtchn_port_t port; uint32_t vcpu; };
struct evtchn_unmask { evtchn_port_t port; };
struct evtchn_reset { domid_t dom; };
struct evtchn_init_control {
	uint64_t control_gfn;
	uint32_t offset;
	uint32_t vcpu;
	uint8_t link_bits;
	uint8_t _pad[7];
};
struct evtchn_expand_array { uint64_t array_gfn; };
struct evtchn_set_priority { evtchn_port_t port; uint32_t priority; };
/* FIFO ABI */
#define EVTCHN_FIFO_PRIORITY_MAX	0
#define EVTCHN_FIFO_PRIORITY_DEFAULT	7
#define EVTCHN_FIFO_PRIORITY_MIN	15
#define EVTCHN_FIFO_MAX_QUEUES		(EVTCHN_FIFO_PRIORITY_MIN + 1)
typedef uint32_t event_word_t;
#define EVTCHN_FIFO_PENDING	31
#define EVTCHN_FIFO_MASKED	30
#define EVTCHN_FIFO_LINKED	29
#define EVTCHN_FIFO_BUSY	28
#define EVTCHN_FIFO_LINK_BITS	17
#define EVTCHN_FIFO_LINK_MASK	((1 << EVTCHN_FIFO_LINK_BITS) - 1)
#define EVTCHN_FIFO_NR_CHANNELS	(1 << EVTCHN_FIFO_LINK_BITS)
struct evtchn_fifo_control_block {
	uint32_t ready;
	uint32_t _rsvd;
	uint32_t head[EVTCHN_FIFO_MAX_QUEUES];
};

/* ---- grant_table_op (public/grant_table.h) ---------------------------------- */
#define GNTTABOP_map_grant_ref		0
#define GNTTABOP_unmap_grant_ref	1
#define GNTTABOP_setup_table		2
#define GNTTABOP_dump_table		3
#define GNTTABOP_transfer		4
#define GNTTABOP_copy			5
#define GNTTABOP_query_size		6
#define GNTTABOP_unmap_and_replace	7
#define GNTTABOP_set_version		8
#define GNTTABOP_get_status_frames	9
#define GNTTABOP_get_version		10
#define GNTTABOP_swap_grant_ref		11

#define GNTST_okay		0
#define GNTST_general_error	(-1)
#define GNTST_bad_domain	(-2)
#define GNTST_bad_virt_addr	(-5)

struct gnttab_query_size {
	domid_t dom;
	uint16_t pad;
	uint32_t nr_frames;
	uint32_t max_nr_frames;
	int16_t status;
	uint16_t pad2;
};
struct gnttab_setup_table {
	domid_t dom;
	uint16_t pad;
	uint32_t nr_frames;
	int16_t status;
	uint16_t pad2[3];
	uint64_t frame_list;		/* handle: xen_pfn_t[] */
};
struct gnttab_set_version { uint32_t version; };
struct gnttab_get_version { domid_t dom; uint16_t pad; uint32_t version; };
struct grant_entry_v1 { uint16_t flags; domid_t domid; uint32_t frame; };

/* ---- physdev_op (public/physdev.h) ------------------------------------------- */
#define PHYSDEVOP_irq_status_query	5
#define PHYSDEVOP_eoi			12
#define PHYSDEVOP_map_pirq		13
#define PHYSDEVOP_unmap_pirq		14
#define PHYSDEVOP_setup_gsi		21
#define PHYSDEVOP_get_free_pirq		23
#define MAP_PIRQ_TYPE_MSI		0x0
#define MAP_PIRQ_TYPE_GSI		0x1
#define MAP_PIRQ_TYPE_UNKNOWN		0x2
#define MAP_PIRQ_TYPE_MSI_SEG		0x3
#define MAP_PIRQ_TYPE_MULTI_MSI		0x4
#define XENIRQSTAT_needs_eoi		(1u << 0)
#define XENIRQSTAT_shared		(1u << 1)
struct physdev_eoi { uint32_t irq; };
struct physdev_irq_status_query { uint32_t irq; uint32_t flags; };
struct physdev_map_pirq {
	domid_t domid;
	uint16_t pad;
	int32_t type;			/* MAP_PIRQ_TYPE_* */
	int32_t index;			/* GSI */
	int32_t pirq;			/* IN (-1: allocate) / OUT */
	int32_t bus;
	int32_t devfn;
	int32_t entry_nr;
	uint32_t pad2;
	uint64_t table_base;
};
struct physdev_unmap_pirq { domid_t domid; uint16_t pad; int32_t pirq; };
struct physdev_get_free_pirq { int32_t type; uint32_t pirq; };
/* event_channel.h: EVTCHNOP_bind_pirq */
#define BIND_PIRQ__WILL_SHARE		1
struct evtchn_bind_pirq { uint32_t pirq; uint32_t flags; evtchn_port_t port; };
/*
 * The MSI message that names PIRQ P (Linux arch/x86/pci/xen.c xen_msi_compose_msg,
 * Xen hvm/irq.c hvm_inject_msi): vector 0, address_hi[31:8] = P[31:8], dest id
 * (address_lo[19:12]) = P[7:0].  XEN_PIRQ_MSI_DATA is Linux's data value.
 */
#define XEN_PIRQ_MSI_DATA		0x4300u	/* edge, assert, delivery mode 3, vector 0 */
#define XEN_PIRQ_MSI_ADDR(p)		(((uint64_t)((p) & 0xffffff00u) << 32) | 0xfee00000u | \
					 (((uint64_t)(p) & 0xff) << 12))

/* ---- Hypercall transport ----------------------------------------------------------
 * The hypercall page is written by the hypervisor when its GPA is written to
 * the MSR named by CPUID base+2 EBX.  Entry N is at page + N * 32.
 * 64-bit ABI: rax = result; args rdi rsi rdx r10 r8.  rcx and r11 may be
 * clobbered (as Linux's asm/xen/hypercall.h assumes).
 */
extern uint8_t xen_hypercall_page[4096];

#define XEN_HC_INLINE static inline __attribute__((always_inline))
#define __XEN_HCALL_CLOBBERS "memory", "cc", "rcx", "r11"

XEN_HC_INLINE long _hypercall0(unsigned nr)
{
	register long res asm("rax");
	register unsigned long a1 asm("rdi"), a2 asm("rsi"), a3 asm("rdx"), a4 asm("r10"), a5 asm("r8");
	asm volatile("call xen_hypercall_page+%c[off]"
		     : "=r"(res), "=r"(a1), "=r"(a2), "=r"(a3), "=r"(a4), "=r"(a5)
		     : [off] "i"(nr * 32) : __XEN_HCALL_CLOBBERS);
	return res;
}
XEN_HC_INLINE long _hypercall1(unsigned nr, unsigned long x1)
{
	register long res asm("rax");
	register unsigned long a1 asm("rdi") = x1, a2 asm("rsi"), a3 asm("rdx"), a4 asm("r10"), a5 asm("r8");
	asm volatile("call xen_hypercall_page+%c[off]"
		     : "=r"(res), "+r"(a1), "=r"(a2), "=r"(a3), "=r"(a4), "=r"(a5)
		     : [off] "i"(nr * 32) : __XEN_HCALL_CLOBBERS);
	return res;
}
XEN_HC_INLINE long _hypercall2(unsigned nr, unsigned long x1, unsigned long x2)
{
	register long res asm("rax");
	register unsigned long a1 asm("rdi") = x1, a2 asm("rsi") = x2, a3 asm("rdx"), a4 asm("r10"), a5 asm("r8");
	asm volatile("call xen_hypercall_page+%c[off]"
		     : "=r"(res), "+r"(a1), "+r"(a2), "=r"(a3), "=r"(a4), "=r"(a5)
		     : [off] "i"(nr * 32) : __XEN_HCALL_CLOBBERS);
	return res;
}
XEN_HC_INLINE long _hypercall3(unsigned nr, unsigned long x1, unsigned long x2, unsigned long x3)
{
	register long res asm("rax");
	register unsigned long a1 asm("rdi") = x1, a2 asm("rsi") = x2, a3 asm("rdx") = x3, a4 asm("r10"), a5 asm("r8");
	asm volatile("call xen_hypercall_page+%c[off]"
		     : "=r"(res), "+r"(a1), "+r"(a2), "+r"(a3), "=r"(a4), "=r"(a5)
		     : [off] "i"(nr * 32) : __XEN_HCALL_CLOBBERS);
	return res;
}
XEN_HC_INLINE long _hypercall4(unsigned nr, unsigned long x1, unsigned long x2, unsigned long x3,
			       unsigned long x4)
{
	register long res asm("rax");
	register unsigned long a1 asm("rdi") = x1, a2 asm("rsi") = x2, a3 asm("rdx") = x3, a4 asm("r10") = x4,
		a5 asm("r8");
	asm volatile("call xen_hypercall_page+%c[off]"
		     : "=r"(res), "+r"(a1), "+r"(a2), "+r"(a3), "+r"(a4), "=r"(a5)
		     : [off] "i"(nr * 32) : __XEN_HCALL_CLOBBERS);
	return res;
}
XEN_HC_INLINE long _hypercall5(unsigned nr, unsigned long x1, unsigned long x2, unsigned long x3,
			       unsigned long x4, unsigned long x5)
{
	register long res asm("rax");
	register unsigned long a1 asm("rdi") = x1, a2 asm("rsi") = x2, a3 asm("rdx") = x3, a4 asm("r10") = x4,
		a5 asm("r8") = x5;
	asm volatile("call xen_hypercall_page+%c[off]"
		     : "=r"(res), "+r"(a1), "+r"(a2), "+r"(a3), "+r"(a4), "+r"(a5)
		     : [off] "i"(nr * 32) : __XEN_HCALL_CLOBBERS);
	return res;
}
/* Any entry number (0..127), e.g. for "unknown hypercall" tests. */
long xen_hypercall_raw(unsigned nr, unsigned long a1, unsigned long a2, unsigned long a3,
		       unsigned long a4, unsigned long a5);

#define _HC_P(p) ((unsigned long)(uintptr_t)(p))
XEN_HC_INLINE long HYPERVISOR_xen_version(int cmd, void *arg)
	{ return _hypercall2(__HYPERVISOR_xen_version, (unsigned)cmd, _HC_P(arg)); }
XEN_HC_INLINE long HYPERVISOR_memory_op(unsigned long cmd, void *arg)
	{ return _hypercall2(__HYPERVISOR_memory_op, cmd, _HC_P(arg)); }
XEN_HC_INLINE long HYPERVISOR_hvm_op(unsigned long op, void *arg)
	{ return _hypercall2(__HYPERVISOR_hvm_op, op, _HC_P(arg)); }
XEN_HC_INLINE long HYPERVISOR_vcpu_op(int cmd, unsigned vcpu, void *arg)
	{ return _hypercall3(__HYPERVISOR_vcpu_op, (unsigned)cmd, vcpu, _HC_P(arg)); }
XEN_HC_INLINE long HYPERVISOR_sched_op(int cmd, void *arg)
	{ return _hypercall2(__HYPERVISOR_sched_op, (unsigned)cmd, _HC_P(arg)); }
XEN_HC_INLINE long HYPERVISOR_event_channel_op(int cmd, void *arg)
	{ return _hypercall2(__HYPERVISOR_event_channel_op, (unsigned)cmd, _HC_P(arg)); }
XEN_HC_INLINE long HYPERVISOR_grant_table_op(unsigned cmd, void *uop, unsigned count)
	{ return _hypercall3(__HYPERVISOR_grant_table_op, cmd, _HC_P(uop), count); }
XEN_HC_INLINE long HYPERVISOR_console_io(int cmd, unsigned count, const char *str)
	{ return _hypercall3(__HYPERVISOR_console_io, (unsigned)cmd, count, _HC_P(str)); }
XEN_HC_INLINE long HYPERVISOR_vm_assist(unsigned cmd, unsigned type)
	{ return _hypercall2(__HYPERVISOR_vm_assist, cmd, type); }
XEN_HC_INLINE long HYPERVISOR_set_timer_op(uint64_t timeout_abs_ns)
	{ return _hypercall1(__HYPERVISOR_set_timer_op, timeout_abs_ns); }
XEN_HC_INLINE long HYPERVISOR_physdev_op(int cmd, void *arg)
	{ return _hypercall2(__HYPERVISOR_physdev_op, (unsigned)cmd, _HC_P(arg)); }

/* ---- Setup ---------------------------------------------------------------------------- */
struct xen_info {
	uint32_t base;		/* CPUID base with the signature, 0 if none */
	uint32_t max_leaf;	/* CPUID base EAX */
	uint32_t version;	/* CPUID base+1 EAX: major << 16 | minor */
	uint32_t hcall_pages;	/* CPUID base+2 EAX */
	uint32_t hcall_msr;	/* CPUID base+2 EBX */
	uint32_t hvm_flags;	/* CPUID base+4 EAX (0 if leaf absent) */
	uint32_t domid;		/* base+4 ECX if DOMID_PRESENT, else ~0 */
};
extern struct xen_info xen_info;

/* Highest CPUID base 0x40000000..0x4000FF00 with "XenVMMXenVMM" and EAX-base >= 2; 0 if none. */
uint32_t xen_detect(void);
/* xen_detect() + write the hypercall page MSR.  Prints one "xen: ..." line; fails the test if no Xen. */
void xen_init(void);
/* This vCPU's Xen vcpu id: CPUID base+4 EBX if VCPU_ID_PRESENT, else the APIC id. */
uint32_t xen_vcpu_id(void);
/* XENVER_get_features submap 0. */
uint32_t xen_features(void);

/* add_to_physmap(XENMAPSPACE_shared_info, idx 0) onto a page-aligned kit buffer. */
struct shared_info *xen_map_shared_info(void);
extern struct shared_info *volatile xen_shared_info;

/* The vcpu_info this CPU uses (shared_info slot, or the one registered). */
struct vcpu_info *xen_vcpu_info(void);
/* VCPUOP_register_vcpu_info for the calling vCPU at BUF+OFFSET; remembers it. */
long xen_register_vcpu_info(void *page, unsigned offset);
/* Memory for ad-hoc tests: NR page-aligned scratch pages (xen_scratch_page(i)). */
#define XEN_SCRATCH_PAGES 8
void *xen_scratch_page(unsigned i);

/* ---- Event channels ----------------------------------------------------------------------- */
static inline void xen_set_bit(unsigned nr, volatile void *addr)
	{ asm volatile("lock btsq %1, %0" : "+m"(*(volatile uint64_t *)addr) : "Ir"((uint64_t)nr) : "memory"); }
static inline void xen_clear_bit(unsigned nr, volatile void *addr)
	{ asm volatile("lock btrq %1, %0" : "+m"(*(volatile uint64_t *)addr) : "Ir"((uint64_t)nr) : "memory"); }
static inline bool xen_test_and_clear_bit(unsigned nr, volatile void *addr)
{
	bool old;
	asm volatile("lock btrq %2, %1" : "=@ccc"(old), "+m"(*(volatile uint64_t *)addr)
		     : "Ir"((uint64_t)nr) : "memory");
	return old;
}
static inline bool xen_test_bit(unsigned nr, const volatile void *addr)
	{ return (((const volatile uint64_t *)addr)[nr / 64] >> (nr % 64)) & 1; }

/* Bits of a port in shared_info (bitmaps are 64 words of 64 bits). */
static inline bool xen_evtchn_pending(evtchn_port_t p)
	{ return xen_test_bit(p % 64, &xen_shared_info->evtchn_pending[p / 64]); }
static inline bool xen_evtchn_masked(evtchn_port_t p)
	{ return xen_test_bit(p % 64, &xen_shared_info->evtchn_mask[p / 64]); }
static inline void xen_evtchn_mask(evtchn_port_t p)
	{ xen_set_bit(p % 64, &xen_shared_info->evtchn_mask[p / 64]); }
static inline void xen_evtchn_clear_mask_bit(evtchn_port_t p)	/* local only, no hypercall */
	{ xen_clear_bit(p % 64, &xen_shared_info->evtchn_mask[p / 64]); }
static inline void xen_evtchn_clear_pending(evtchn_port_t p)
	{ xen_clear_bit(p % 64, &xen_shared_info->evtchn_pending[p / 64]); }

/* Thin wrappers; return the hypercall's result, and the port through *port. */
long xen_evtchn_alloc_unbound(domid_t remote, evtchn_port_t *port);
long xen_evtchn_bind_interdomain(domid_t remote, evtchn_port_t remote_port, evtchn_port_t *port);
long xen_evtchn_bind_virq(uint32_t virq, uint32_t vcpu, evtchn_port_t *port);
long xen_evtchn_bind_ipi(uint32_t vcpu, evtchn_port_t *port);
long xen_evtchn_bind_vcpu(evtchn_port_t port, uint32_t vcpu);
long xen_evtchn_send(evtchn_port_t port);
long xen_evtchn_close(evtchn_port_t port);
long xen_evtchn_unmask(evtchn_port_t port);
long xen_evtchn_status(evtchn_port_t port, struct evtchn_status *st);

/*
 * Upcall framework.  xen_upcall() is what an upcall interrupt handler calls
 * (Linux's xen_evtchn_do_upcall, 2-level): while this vCPU's
 * evtchn_upcall_pending is set, clear it, xchg evtchn_pending_sel with 0,
 * and for every pending & ~masked port owned by this vCPU clear its pending
 * bit, count it and call its callback.  Returns the number of ports handled.
 * Ports belong to vCPU 0 unless xen_evtchn_set_owner() (the xen_evtchn_bind_*
 * wrappers above set it for IPI/VIRQ/bind_vcpu).
 */
#define XEN_KIT_MAX_PORTS 1024
typedef void (*xen_evtchn_cb_t)(evtchn_port_t port, void *arg);
void xen_evtchn_set_handler(evtchn_port_t port, xen_evtchn_cb_t cb, void *arg);
void xen_evtchn_set_owner(evtchn_port_t port, uint32_t vcpu);
unsigned xen_upcall(void);
extern volatile uint32_t xen_evtchn_count[XEN_KIT_MAX_PORTS];	/* deliveries per port */
extern volatile uint64_t xen_evtchn_last_ns[XEN_KIT_MAX_PORTS];	/* pvclock at last delivery */
struct xen_upcall_stats {
	uint32_t calls;		/* xen_upcall() invocations */
	uint32_t spurious;	/* ... that found upcall_pending == 0 */
	uint32_t ports;		/* ports handled */
};
extern volatile struct xen_upcall_stats xen_upcall_stats[KIT_MAX_CPUS];

/* Ready-made interrupt handlers. */
void xen_upcall_isr_eoi(struct kit_frame *f);	/* xen_upcall() + lapic_eoi(): LAPIC vectors, GSI/INTx */
void xen_upcall_isr_noeoi(struct kit_frame *f);	/* xen_upcall() only: HVM_PARAM_CALLBACK_IRQ vector */

/* HVMOP wrappers */
long xen_hvm_set_param(uint32_t index, uint64_t value);
long xen_hvm_get_param(uint32_t index, uint64_t *value);
long xen_set_upcall_vector(uint32_t vcpu, uint8_t vector);

/* PIRQ wrappers (physdev_op, EVTCHNOP_bind_pirq); return the hypercall's result. */
long xen_map_pirq_gsi(unsigned gsi, int *pirq);	/* *pirq: IN (-1: allocate) / OUT */
long xen_unmap_pirq(int pirq);
long xen_pirq_eoi(uint32_t pirq);
long xen_pirq_status(uint32_t pirq, uint32_t *flags);
long xen_get_free_pirq(int type, uint32_t *pirq);
long xen_bind_pirq(uint32_t pirq, uint32_t flags, evtchn_port_t *port);	/* owner: vCPU 0 */
/* ---- Time -------------------------------------------------------------------------------------- */
/* pvclock: system_time + ((tsc - tsc_timestamp) << shift) * mul >> 32, under a version loop. */
uint64_t xen_pvclock_read(const volatile struct vcpu_time_info *t);
uint64_t xen_pvclock_scale(uint64_t delta_tsc, uint32_t mul, int8_t shift);
/* Xen system time (ns since boot) from this vCPU's vcpu_info. */
uint64_t xen_now(void);
/* TSC frequency implied by vcpu_info.time: ((1e9 << 32) / mul) >> shift. */
uint64_t xen_tsc_hz(void);
/* Wallclock at system time 0, from shared_info (wc_version loop). */
void xen_wallclock(uint64_t *sec, uint32_t *nsec);

long xen_set_singleshot(uint64_t deadline_ns, uint32_t flags);
/*
 * Sleep (sti; hlt) until COND or the pvclock passes DEADLINE_NS.  A LAPIC
 * one-shot timer (vector XEN_KIT_WAKE_VECTOR, handler installed by
 * xen_wait_init()) bounds every hlt, so this never hangs; it is stopped on
 * the way out.  IF=1 afterwards.  Evaluates to COND's final value.
 */
#define XEN_KIT_WAKE_VECTOR 0xe0
void xen_wait_init(void);		/* lapic_enable() + wake handler; per CPU */
void xen_arm_wake(uint64_t deadline_ns);
extern volatile uint32_t xen_wake_count;	/* wake-timer interrupts taken */
#define XEN_WAIT_UNTIL(cond, deadline_ns) ({				\
	uint64_t __dl = (deadline_ns);					\
	bool __ok;							\
	cli();								\
	while (!(__ok = (cond)) && xen_now() < __dl) {			\
		xen_arm_wake(__dl);					\
		safe_halt();						\
		cli();							\
	}								\
	lapic_timer_stop();	/* no stray wake-up later (it would end a poll) */ \
	sti();								\
	__ok;								\
})
#define XEN_MS(x) ((uint64_t)(x) * 1000000ULL)
/* Busy-wait with interrupts as they are, until the pvclock passes DEADLINE_NS. */
void xen_spin_until(uint64_t deadline_ns);

/* ---- CPL 3, compat mode, extra mappings ----------------------------------------------------- */
/*
 * Run FN(ARG) at CPL 3 (user code/data segments, U bit on the image's
 * page-table entries, IOPL=3 so a port-I/O hypercall stub can work, IF=0) and
 * return its result.  FN comes back to ring 0 through a deliberate #UD at
 * xen_user_exit (vector 6 is taken over during the call).  Any other fault
 * in ring 3 is taken on the TSS RSP0 stack; its handler may call
 * xen_user_fault_return(f, value) to end the user call with VALUE.
 * NB: on the PVM host guest ring 3 runs natively with IOPL 0 whatever the
 * guest sets, so port I/O from ring 3 raises #GP there.
 */
long xen_user_call(long (*fn)(void *), void *arg);
void xen_user_fault_return(struct kit_frame *f, long value);
#define XEN_USER_CS	0x2b	/* 0x28 | 3 */
#define XEN_USER_DS	0x23	/* 0x20 | 3 */

/*
 * Far-return into the kit's 32-bit code segment (KIT_CS32: L=0 D=1, a
 * compatibility-mode segment in long mode), `call` TARGET (a 32-bit address)
 * with EBX ECX EDX ESI EDI = A1..A5, come back to 64-bit mode and return EAX.
 * Interrupts are disabled meanwhile.  xen_compat_hypercall() calls the
 * hypercall page entry NR this way (Xen's 32-bit ABI).  Not reentrant: the
 * target and the saved RSP are globals, so use it from one CPU at a time.
 */
uint32_t xen_compat_call(uint32_t target, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t a4,
			 uint32_t a5);
static inline long xen_compat_hypercall(unsigned nr, uint32_t a1, uint32_t a2, uint32_t a3,
					uint32_t a4, uint32_t a5)
{
	return (int32_t)xen_compat_call((uint32_t)(uintptr_t)(xen_hypercall_page + nr * 32),
					a1, a2, a3, a4, a5);
}
/* A 32-bit function for tests: returns EBX + 2*ECX + 3*EDX + 4*ESI + 5*EDI, or ~0 if not in compat mode. */
extern char xen_compat_selftest_fn[];

/* A canonical virtual address the kit never maps (PML4 slot 254). */
#define XEN_KIT_UNMAPPED_VA 0x00007f0000000000ULL
/* 4 KiB mappings in a window at XEN_KIT_VA_WINDOW (8 GiB), slots 0..511, U|W|P unless FLAGS given. */
#define XEN_KIT_VA_WINDOW 0x200000000ULL
void *xen_map_4k(unsigned slot, uint64_t paddr);
void xen_unmap_4k(unsigned slot);
/* An address that is identity-mapped but not RAM (above the memmap's RAM top), 2 MiB aligned. */
uint64_t xen_unbacked_paddr(void);

/* ---- Small helpers for interrupt-routing tests ------------------------------------------------ */
#define KIT_IOAPIC_BASE 0xfec00000UL
static inline void ioapic_write(unsigned reg, uint32_t v)
{
	*(volatile uint32_t *)KIT_IOAPIC_BASE = reg;
	*(volatile uint32_t *)(KIT_IOAPIC_BASE + 0x10) = v;
}
static inline uint32_t ioapic_read(unsigned reg)
{
	*(volatile uint32_t *)KIT_IOAPIC_BASE = reg;
	return *(volatile uint32_t *)(KIT_IOAPIC_BASE + 0x10);
}
/* Route GSI to VECTOR on DEST_APIC, fixed, physical; LEVEL: bit 15, ACTIVE_LOW: bit 13, MASKED: bit 16. */
static inline void ioapic_route(unsigned gsi, uint8_t vector, bool level, bool active_low,
				uint32_t dest_apic, bool masked)
{
	ioapic_write(0x10 + 2 * gsi + 1, dest_apic << 24);
	ioapic_write(0x10 + 2 * gsi, vector | (level ? 1u << 15 : 0) | (active_low ? 1u << 13 : 0) |
		     (masked ? 1u << 16 : 0));
}
static inline void pic_mask_all(void) { outb(PIC1_DATA, 0xff); outb(PIC2_DATA, 0xff); }
static inline uint32_t pci_cfg_read32(unsigned bus, unsigned dev, unsigned fn, unsigned off)
{
	outl(0xcf8, 0x80000000u | (bus << 16) | (dev << 11) | (fn << 8) | (off & 0xfc));
	return inl(0xcfc);
}

/* ---- Test scaffolding ------------------------------------------------------------------------------- */
/*
 * xen_test_start(NAME): xen_test_name = NAME, xen_init(), xen_map_shared_info(),
 * xen_wait_init().  Call after the test's greeting line.
 */
void xen_test_start(const char *name);
/*
 * Per-vCPU upcall vector for the calling vCPU (what Linux 6.x uses first):
 * IDT[XEN_KIT_UPCALL_VECTOR] = xen_upcall_isr_eoi, then
 * HVMOP_set_evtchn_upcall_vector.  Xen raises the vector once at once
 * (hvm.c: hvm_assert_evtchn_irq), so interrupts are enabled briefly to take
 * that spurious upcall.  Fails the test if the hypercall fails.
 */
#define XEN_KIT_UPCALL_VECTOR 0xf3
void xen_use_upcall_vector(void);

/*
 * The GSI / PCI INTx callback checks shared by xen_upcall_gsi and
 * xen_upcall_intx: HVM_PARAM_CALLBACK_IRQ = CALLBACK, the line is GSI,
 * routed level-triggered (ACTIVE_LOW as given) to VECTOR on this CPU.
 * Prints its lines with xen_test_name; fails the test on error.
 */
void xen_check_level_callback(unsigned gsi, uint8_t vector, bool active_low, uint64_t callback);

/* ---- Test reporting ------------------------------------------------------------------------------ */
/*
 * A failed check prints "FAIL: <name>: ..." and exits 1, unless the command
 * line has "keep_going=1": then it counts the failure and goes on, and
 * xen_pass() exits 1 at the end if anything failed (to see every deviation
 * in one run).
 */
extern const char *xen_test_name;
extern int xen_keep_going, xen_failures;
void xen_check_failed(const char *file, int line, const char *fmt, ...) __printf(3, 4);
void xen_pass(void) __noreturn;		/* "PASS" + exit 0, or exit 1 after kept-going failures */
#define XEN_CHECK(cond, ...) do {						\
	if (!(cond)) {								\
		printf("%s: ", xen_test_name);					\
		printf(__VA_ARGS__);						\
		xen_check_failed(__FILE__, __LINE__, "check failed: %s", #cond);	\
	}									\
} while (0)
/* Checks RC == WANT and prints one line: "<name>: <what> = <rc> ok". */
#define XEN_EXPECT(what, rc_expr, want) do {					\
	long __rc = (long)(rc_expr);						\
	long __want = (long)(want);						\
	if (__rc != __want)							\
		xen_check_failed(__FILE__, __LINE__, "%s = %ld (%#lx), want %ld",	\
				 what, __rc, __rc, __want);			\
	else if (__rc > -1000000 && __rc < 1000000)				\
		printf("%s: %s = %ld ok\n", xen_test_name, what, __rc);		\
	else									\
		printf("%s: %s = %#lx ok\n", xen_test_name, what, __rc);		\
} while (0)
const char *xen_strerror(long rc);	/* "-EINVAL" etc., for messages */
/* "key=<unsigned>" in the kernel command line; DEF if absent. */
uint64_t xen_cmdline_u64(const char *key, uint64_t def);

/* ---- Layout checks (against the public headers) ------------------------------------------------- */
#define XEN_OFF(t, m, o) _Static_assert(offsetof(struct t, m) == (o), #t "." #m)
/* ---- public/io/console.h: the PV console ring page ------------------------------------------ */
struct xencons_interface {
	char in[1024];
	char out[2048];
	uint32_t in_cons, in_prod;
	uint32_t out_cons, out_prod;
	uint8_t connection;			/* XENCONSOLE_CONNECTED 0 / DISCONNECTED 1 */
};
#define XENCONS_MASK(idx, ring) ((idx) & (sizeof(ring) - 1))
/* tools/include/xenguest.h, tools/libs/guest/xg_dom_x86.c: the toolstack's special pages */
#define XEN_SPECIAL_PFN(x) (0xff000u - 8 + (x))
#define XEN_SPECIALPAGE_XENSTORE 4
#define XEN_SPECIALPAGE_CONSOLE 7

/* ---- public/io/xs_wire.h: xenstore messages and the ring page (docs/misc/xenstore-ring.txt) ---- */
struct xsd_sockmsg {
	uint32_t type;				/* XS_* */
	uint32_t req_id;			/* echoed in the reply */
	uint32_t tx_id;				/* 0: no transaction */
	uint32_t len;				/* payload bytes that follow */
};
#define XS_DIRECTORY		1
#define XS_READ			2
#define XS_GET_PERMS		3
#define XS_WATCH		4
#define XS_UNWATCH		5
#define XS_TRANSACTION_START	6
#define XS_TRANSACTION_END	7
#define XS_GET_DOMAIN_PATH	10
#define XS_WRITE		11
#define XS_MKDIR		12
#define XS_RM			13
#define XS_SET_PERMS		14
#define XS_WATCH_EVENT		15
#define XS_ERROR		16
#define XS_RESET_WATCHES	21
#define XENSTORE_RING_SIZE	1024
#define MASK_XENSTORE_IDX(idx)	((idx) & (XENSTORE_RING_SIZE - 1))
#define XENSTORE_PAYLOAD_MAX	4096
#define XENSTORE_ABS_PATH_MAX	3072
struct xenstore_domain_interface {
	char req[XENSTORE_RING_SIZE];		/* requests to the daemon */
	char rsp[XENSTORE_RING_SIZE];		/* replies and watch events */
	uint32_t req_cons, req_prod;
	uint32_t rsp_cons, rsp_prod;
	uint32_t server_features;		/* XENSTORE_SERVER_FEATURE_* */
	uint32_t connection;			/* XENSTORE_CONNECTED / _RECONNECT */
	uint32_t error;				/* XENSTORE_ERROR_* */
	uint32_t evtchn_port;
};
#define XENSTORE_SERVER_FEATURE_RECONNECTION	1
#define XENSTORE_SERVER_FEATURE_ERROR		2
#define XENSTORE_CONNECTED	0
#define XENSTORE_RECONNECT	1
#define XENSTORE_ERROR_NONE	0
#define XENSTORE_ERROR_COMM	1
#define XENSTORE_ERROR_RINGIDX	2
#define XENSTORE_ERROR_PROTO	3

/* kit/xen/xs.c: a synchronous xenstore client over the ring (Linux's xenbus_comms.c and
 * xenbus_xs.c are the model).  Calls return 0 or the errno of an XS_ERROR reply (a Xen
 * errno, from its name); -1 when no reply came in time.  Watch events met while waiting
 * for a reply are kept (up to 16) for xs_next_event. */
extern volatile struct xenstore_domain_interface *xs_ring;
extern evtchn_port_t xs_port;
void xs_init(unsigned map_slot);	/* HVM_PARAM_STORE_PFN/EVTCHN, map the page, unmask */
void xs_put(const void *data, uint32_t n);	/* raw bytes into req, then notify */
int xs_request(uint32_t type, uint32_t tx, const void *payload, uint32_t len, char *out, uint32_t outlen,
	       uint32_t *outlen_got);
int xs_read(uint32_t tx, const char *path, char *out, uint32_t outlen);
int xs_write(uint32_t tx, const char *path, const char *value);
int xs_simple(uint32_t type, uint32_t tx, const char *arg);	/* one-string ops: RM, MKDIR, ... */
int xs_tx_start(uint32_t *tx);
int xs_tx_end(uint32_t tx, bool commit);
int xs_watch(const char *path, const char *token);
int xs_unwatch(const char *path, const char *token);
/* the next watch event (queued or from the ring) before deadline_ns: 0, or -1 */
int xs_next_event(char *path, uint32_t plen, char *token, uint32_t tlen, uint64_t deadline_ns);

#define XEN_SIZE(t, s) _Static_assert(sizeof(struct t) == (s), "sizeof " #t)
XEN_SIZE(vcpu_time_info, 32);
XEN_OFF(vcpu_time_info, system_time, 16);
XEN_OFF(vcpu_time_info, tsc_to_system_mul, 24);
XEN_OFF(vcpu_time_info, tsc_shift, 28);
XEN_SIZE(vcpu_info, 64);
XEN_OFF(vcpu_info, evtchn_pending_sel, 8);
XEN_OFF(vcpu_info, arch, 16);
XEN_OFF(vcpu_info, time, 32);
XEN_OFF(shared_info, evtchn_pending, 0x800);
XEN_OFF(shared_info, evtchn_mask, 0xa00);
XEN_OFF(shared_info, wc_version, 0xc00);
XEN_OFF(shared_info, wc_sec, 0xc04);
XEN_OFF(shared_info, wc_nsec, 0xc08);
XEN_OFF(shared_info, wc_sec_hi, 0xc0c);
XEN_OFF(shared_info, arch, 0xc10);
XEN_SIZE(shared_info, 0xc40);
XEN_SIZE(xen_compile_info, 144);
XEN_SIZE(xen_feature_info, 8);
XEN_SIZE(xen_memory_reservation, 32);
XEN_OFF(xen_memory_reservation, nr_extents, 8);
XEN_OFF(xen_memory_reservation, extent_order, 16);
XEN_OFF(xen_memory_reservation, domid, 24);
XEN_SIZE(xen_add_to_physmap, 24);
XEN_OFF(xen_add_to_physmap, space, 4);
XEN_OFF(xen_add_to_physmap, idx, 8);
XEN_OFF(xen_add_to_physmap, gpfn, 16);
XEN_SIZE(xen_add_to_physmap_batch, 32);
XEN_OFF(xen_add_to_physmap_batch, size, 4);
XEN_OFF(xen_add_to_physmap_batch, idxs, 8);
XEN_OFF(xen_add_to_physmap_batch, errs, 24);
XEN_SIZE(xen_memory_map, 16);
XEN_SIZE(xen_e820_entry, 20);
XEN_SIZE(xen_hvm_param, 16);
XEN_OFF(xen_hvm_param, index, 4);
XEN_OFF(xen_hvm_param, value, 8);
XEN_SIZE(xen_hvm_evtchn_upcall_vector, 8);
XEN_SIZE(xen_hvm_pagetable_dying, 16);
XEN_SIZE(vcpu_runstate_info, 48);
XEN_OFF(vcpu_runstate_info, state_entry_time, 8);
XEN_OFF(vcpu_runstate_info, time, 16);
XEN_SIZE(vcpu_register_vcpu_info, 16);
XEN_SIZE(vcpu_set_singleshot_timer, 16);
XEN_SIZE(sched_poll, 24);
XEN_OFF(sched_poll, nr_ports, 8);
XEN_OFF(sched_poll, timeout, 16);
XEN_SIZE(compat_sched_poll, 16);
XEN_SIZE(evtchn_alloc_unbound, 8);
XEN_SIZE(evtchn_bind_interdomain, 12);
XEN_OFF(evtchn_bind_interdomain, remote_port, 4);
XEN_SIZE(evtchn_bind_virq, 12);
XEN_SIZE(evtchn_bind_ipi, 8);
XEN_SIZE(evtchn_status, 24);
XEN_OFF(evtchn_status, status, 8);
XEN_OFF(evtchn_status, vcpu, 12);
XEN_OFF(evtchn_status, u, 16);
XEN_OFF(evtchn_status, u.interdomain.port, 20);
XEN_SIZE(evtchn_bind_vcpu, 8);
XEN_SIZE(evtchn_init_control, 24);
XEN_SIZE(gnttab_query_size, 16);
XEN_OFF(gnttab_query_size, nr_frames, 4);
XEN_OFF(gnttab_query_size, max_nr_frames, 8);
XEN_OFF(gnttab_query_size, status, 12);
XEN_SIZE(gnttab_setup_table, 24);
XEN_OFF(gnttab_setup_table, status, 8);
XEN_OFF(gnttab_setup_table, frame_list, 16);
XEN_SIZE(gnttab_get_version, 8);
XEN_SIZE(grant_entry_v1, 8);
XEN_SIZE(physdev_map_pirq, 40);
XEN_OFF(physdev_map_pirq, type, 4);
XEN_OFF(physdev_map_pirq, pirq, 12);
XEN_OFF(physdev_map_pirq, table_base, 32);
XEN_SIZE(physdev_unmap_pirq, 8);
XEN_SIZE(physdev_get_free_pirq, 8);
XEN_SIZE(physdev_irq_status_query, 8);
XEN_SIZE(evtchn_bind_pirq, 12);

#endif /* KIT_XEN_H */
