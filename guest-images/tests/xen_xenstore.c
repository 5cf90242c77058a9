/*
 * xen_xenstore: xenstore as a domU finds it on Xen + libxl + xenstored (public/io/xs_wire.h,
 * docs/misc/xenstore.txt, docs/misc/xenstore-ring.txt; tools/libs/light/libxl_create.c
 * and libxl_dom.c for the nodes), through the kit's client (kit/xen/xs.c):
 *  - HVM_PARAM_STORE_PFN is the xenstore special page, HVM_PARAM_STORE_EVTCHN an
 *    interdomain port to domain 0; the page says connected, with the reconnection and
 *    error features;
 *  - the domain's nodes: domid, name (--xen-name), memory/target, cpu/0/availability,
 *    console/port = HVM_PARAM_CONSOLE_EVTCHN, store/port, a --xenstore node;
 *  - permissions: the guest may not write its name nor read dom0's tree (EACCES);
 *    it owns what it writes under data/;
 *  - transactions: a conflicting commit is EAGAIN and leaves the store as it was,
 *    a clean one publishes its writes only at commit, an abort drops them;
 *  - watches: the registration fires once, a write fires again, after XS_UNWATCH
 *    nothing does;
 *  - errors: reading a missing node is ENOENT, a path over XENSTORE_ABS_PATH_MAX EINVAL;
 *  - malformed requests (unknown type, a privileged type, missing or extra NULs, an unknown
 *    transaction) and quotas (node size, 9 open transactions, 127 watches) get xenstored's
 *    errors, and the daemon keeps serving;
 *  - a hostile message (a header announcing more than XENSTORE_PAYLOAD_MAX) makes the
 *    daemon ignore the ring with XENSTORE_ERROR_PROTO in its error field; a reconnection
 *    (connection = XENSTORE_RECONNECT) brings it back with empty rings.
 * With shutdown=1 on the command line it then watches control/shutdown and, when the
 * toolstack writes "poweroff" there (SIGTERM to the VMM), powers off as Linux's
 * drivers/xen/manage.c does; shutdown=2: watches but never reacts; shutdown=3: waits
 * without watching.
 */
#include "xen.h"

#define WAIT_MS 5000

static char buf[XENSTORE_PAYLOAD_MAX + 1];

static void expect_read(const char *path, const char *want)
{
	int rc = xs_read(0, path, buf, sizeof(buf));
	XEN_CHECK(rc == 0, "read %s: error %d\n", path, rc);
	XEN_CHECK(!strcmp(buf, want), "read %s = \"%s\", expected \"%s\"\n", path, buf, want);
}

static unsigned long read_ulong(const char *path)
{
	int rc = xs_read(0, path, buf, sizeof(buf));
	XEN_CHECK(rc == 0, "read %s: error %d\n", path, rc);
	unsigned long v = 0;
	for (const char *c = buf; *c; c++) {
		XEN_CHECK(*c >= '0' && *c <= '9', "%s = \"%s\" is not a number\n", path, buf);
		v = v * 10 + (unsigned long)(*c - '0');
	}
	return v;
}

static void expect_event(const char *path, const char *token)
{
	char p[128], t[64];
	XEN_CHECK(xs_next_event(p, sizeof(p), t, sizeof(t), xen_now() + XEN_MS(WAIT_MS)) == 0,
		  "no watch event for %s\n", path);
	XEN_CHECK(!strcmp(p, path) && !strcmp(t, token), "watch event %s/%s, expected %s/%s\n", p, t, path,
		  token);
}

static void setup_and_nodes(void)
{
	uint64_t pfn = 0, evtchn = 0, con = 0;
	XEN_EXPECT("get_param(STORE_PFN)", xen_hvm_get_param(HVM_PARAM_STORE_PFN, &pfn), 0);
	XEN_EXPECT("get_param(STORE_EVTCHN)", xen_hvm_get_param(HVM_PARAM_STORE_EVTCHN, &evtchn), 0);
	XEN_EXPECT("get_param(CONSOLE_EVTCHN)", xen_hvm_get_param(HVM_PARAM_CONSOLE_EVTCHN, &con), 0);
	XEN_EXPECT("STORE_PFN is the xenstore special page", pfn, XEN_SPECIAL_PFN(XEN_SPECIALPAGE_XENSTORE));
	xs_init(1);
	struct evtchn_status st;
	XEN_EXPECT("status(store port)", xen_evtchn_status(xs_port, &st), 0);
	XEN_EXPECT("store port is interdomain", st.status, EVTCHNSTAT_interdomain);
	XEN_EXPECT("store port's remote domain", st.u.interdomain.dom, 0);
	XEN_EXPECT("connection", xs_ring->connection, XENSTORE_CONNECTED);
	XEN_EXPECT("error", xs_ring->error, XENSTORE_ERROR_NONE);
	XEN_CHECK((xs_ring->server_features & (XENSTORE_SERVER_FEATURE_RECONNECTION | XENSTORE_SERVER_FEATURE_ERROR)) ==
			  (XENSTORE_SERVER_FEATURE_RECONNECTION | XENSTORE_SERVER_FEATURE_ERROR),
		  "server_features %#x\n", xs_ring->server_features);

	unsigned long domid = read_ulong("domid");
	XEN_CHECK(domid != 0, "domid 0\n");
	static char home[64];
	XEN_EXPECT("GET_DOMAIN_PATH", xs_request(XS_GET_DOMAIN_PATH, 0, "1", 2, home, sizeof(home), 0), 0);
	printf("xen_xenstore: domid %lu, home %s\n", domid, home);
	expect_read("name", "kit-xs");
	XEN_CHECK(read_ulong("memory/target") >= 16 * 1024, "memory/target %s\n", buf);
	expect_read("cpu/0/availability", "online");
	XEN_EXPECT("console/port", read_ulong("console/port"), con);
	XEN_EXPECT("store/port", read_ulong("store/port"), xs_port);
	XEN_EXPECT("store/ring-ref", read_ulong("store/ring-ref"), pfn);
	expect_read("data/greeting", "hello from the toolstack");
	printf("xen_xenstore: the domain's nodes ok\n");
}

static void permissions_and_errors(void)
{
	XEN_EXPECT("write name (read-only to the guest)", xs_write(0, "name", "evil"), 13);
	XEN_EXPECT("read /local/domain/0", xs_read(0, "/local/domain/0", buf, sizeof(buf)), 13);
	XEN_EXPECT("read a missing node", xs_read(0, "data/missing", buf, sizeof(buf)), 2);
	XEN_EXPECT("write data/x", xs_write(0, "data/x", "1"), 0);
	expect_read("data/x", "1");
	uint32_t n = 0;
	XEN_EXPECT("GET_PERMS data/x", xs_request(XS_GET_PERMS, 0, "data/x", 7, buf, sizeof(buf), &n), 0);
	XEN_CHECK(buf[0] == 'n' && buf[1] != '0', "data/x perms \"%s\": the guest should own it\n", buf);
	static char path[XENSTORE_ABS_PATH_MAX + 64];
	unsigned i = 0;
	for (const char *p = "/local/domain/1/data/"; *p; p++)
		path[i++] = *p;
	while (i < XENSTORE_ABS_PATH_MAX + 32)
		path[i++] = 'p';
	path[i] = 0;
	XEN_EXPECT("write a path over XENSTORE_ABS_PATH_MAX", xs_write(0, path, "x"), 22);
	printf("xen_xenstore: permissions and errors ok\n");
}

static void transactions(void)
{
	uint32_t t1, t2, t3;
	XEN_EXPECT("tx start", xs_tx_start(&t1), 0);
	XEN_CHECK(t1 != 0, "transaction id 0\n");
	XEN_EXPECT("read data/x in t1", xs_read(t1, "data/x", buf, sizeof(buf)), 0);
	XEN_EXPECT("write data/x outside", xs_write(0, "data/x", "2"), 0);
	XEN_EXPECT("write data/x in t1", xs_write(t1, "data/x", "3"), 0);
	XEN_EXPECT("commit of a conflicting t1", xs_tx_end(t1, true), 11);
	expect_read("data/x", "2");

	XEN_EXPECT("tx start", xs_tx_start(&t2), 0);
	XEN_EXPECT("write data/y in t2", xs_write(t2, "data/y", "in-t2"), 0);
	XEN_EXPECT("data/y outside before commit", xs_read(0, "data/y", buf, sizeof(buf)), 2);
	XEN_EXPECT("commit t2", xs_tx_end(t2, true), 0);
	expect_read("data/y", "in-t2");

	XEN_EXPECT("tx start", xs_tx_start(&t3), 0);
	XEN_EXPECT("write data/z in t3", xs_write(t3, "data/z", "dropped"), 0);
	XEN_EXPECT("abort t3", xs_tx_end(t3, false), 0);
	XEN_EXPECT("data/z after abort", xs_read(0, "data/z", buf, sizeof(buf)), 2);
	XEN_EXPECT("end of an ended transaction", xs_tx_end(t3, true), 2);
	printf("xen_xenstore: transactions ok\n");
}

static void watches(void)
{
	XEN_EXPECT("watch data/w", xs_watch("data/w", "tok1"), 0);
	expect_event("data/w", "tok1");			/* the registration fires once */
	XEN_EXPECT("write data/w", xs_write(0, "data/w", "a"), 0);
	expect_event("data/w", "tok1");
	XEN_EXPECT("write data/w/child", xs_write(0, "data/w/child", "b"), 0);
	expect_event("data/w/child", "tok1");		/* a watch covers the subtree */
	XEN_EXPECT("unwatch", xs_unwatch("data/w", "tok1"), 0);
	XEN_EXPECT("write data/w again", xs_write(0, "data/w", "c"), 0);
	char p[128], t[64];
	XEN_CHECK(xs_next_event(p, sizeof(p), t, sizeof(t), xen_now() + XEN_MS(100)) == -1,
		  "an event after XS_UNWATCH: %s/%s\n", p, t);
	XEN_EXPECT("unwatch again", xs_unwatch("data/w", "tok1"), 2);
	printf("xen_xenstore: watches ok\n");
}

/* Malformed requests and quotas: answered with xenstored's errors, the ring keeps serving. */
static void malformed_and_quotas(void)
{
	XEN_EXPECT("unknown type 99", xs_request(99, 0, "x", 2, 0, 0, 0), 38);		/* ENOSYS */
	XEN_EXPECT("XS_INTRODUCE from a domU", xs_request(8, 0, "5\0" "1\0" "2", 6, 0, 0, 0), 13);	/* EACCES */
	XEN_EXPECT("READ without its NUL", xs_request(XS_READ, 0, "name", 4, 0, 0, 0), 22);	/* EINVAL */
	XEN_EXPECT("READ with two strings", xs_request(XS_READ, 0, "name\0x", 7, 0, 0, 0), 22);
	XEN_EXPECT("WRITE without a value's path", xs_request(XS_WRITE, 0, "", 0, 0, 0, 0), 22);
	XEN_EXPECT("unknown transaction id", xs_read(12345, "name", buf, sizeof(buf)), 2);	/* ENOENT */
	XEN_EXPECT("TRANSACTION_END \"X\"", xs_request(XS_TRANSACTION_END, 0, "X", 2, 0, 0, 0), 22);
	XEN_EXPECT("watch with no token", xs_request(XS_WATCH, 0, "data\0", 5, 0, 0, 0), 22);

	/* node size (2048, xenstored's quota_max_entry_size): a value over it is ENOSPC */
	static char big[2300];
	for (unsigned i = 0; i < sizeof(big) - 1; i++)
		big[i] = 'v';
	big[sizeof(big) - 1] = 0;
	XEN_EXPECT("write a node over the size quota", xs_write(0, "data/big", big), 28);
	XEN_EXPECT("data/big not created", xs_read(0, "data/big", buf, sizeof(buf)), 2);

	/* transactions (quota 10: at most 9 open at once): the next start is ENOSPC */
	uint32_t tx[16];
	unsigned open = 0;
	int rc;
	while (open < 16 && (rc = xs_tx_start(&tx[open])) == 0)
		open++;
	XEN_EXPECT("transaction start over the quota", rc, 28);
	XEN_CHECK(open == 9, "%u transactions opened before ENOSPC, xenstored allows 9\n", open);
	while (open)
		XEN_EXPECT("abort", xs_tx_end(tx[--open], false), 0);
	uint32_t again;
	XEN_EXPECT("transaction start after aborting them", xs_tx_start(&again), 0);
	XEN_EXPECT("abort", xs_tx_end(again, false), 0);

	/* watches (quota 128): the 128th is ENOSPC, and they all go with RESET_WATCHES */
	char path[32];
	unsigned w = 0;
	for (;; w++) {
		unsigned n = 0;
		for (const char *c = "data/q"; *c; c++)
			path[n++] = *c;
		path[n++] = (char)('0' + w / 100), path[n++] = (char)('0' + w / 10 % 10), path[n++] = (char)('0' + w % 10);
		path[n] = 0;
		if ((rc = xs_watch(path, "q")) != 0 || w == 200)
			break;
		char p[128], tk[64];
		XEN_CHECK(xs_next_event(p, sizeof(p), tk, sizeof(tk), xen_now() + XEN_MS(WAIT_MS)) == 0,
			  "no initial event for watch %u\n", w);
	}
	XEN_EXPECT("watch over the quota", rc, 28);
	XEN_CHECK(w == 127, "%u watches before ENOSPC, xenstored allows 127\n", w);
	XEN_EXPECT("RESET_WATCHES", xs_request(XS_RESET_WATCHES, 0, "", 1, 0, 0, 0), 0);
	XEN_EXPECT("watch after RESET_WATCHES", xs_watch("data/q000", "q"), 0);
	expect_event("data/q000", "q");
	XEN_EXPECT("unwatch", xs_unwatch("data/q000", "q"), 0);
	expect_read("name", "kit-xs");
	printf("xen_xenstore: malformed requests and quotas answered, still serving ok\n");
}

static void hostile_message_and_reconnect(void)
{
	struct xsd_sockmsg h = { XS_READ, 999, 0, XENSTORE_PAYLOAD_MAX + 1 };
	uint32_t rsp = xs_ring->rsp_prod;
	xs_put(&h, sizeof(h));
	if (!XEN_WAIT_UNTIL(xs_ring->error != XENSTORE_ERROR_NONE, xen_now() + XEN_MS(WAIT_MS)))
		kit_fail("xen_xenstore: an oversized message wasn't refused");
	XEN_EXPECT("error field", xs_ring->error, XENSTORE_ERROR_PROTO);
	XEN_EXPECT("no reply to it", xs_ring->rsp_prod, rsp);

	xs_ring->connection = XENSTORE_RECONNECT;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	xen_evtchn_send(xs_port);
	if (!XEN_WAIT_UNTIL(xs_ring->connection == XENSTORE_CONNECTED, xen_now() + XEN_MS(WAIT_MS)))
		kit_fail("xen_xenstore: no reconnection");
	XEN_EXPECT("error after reconnection", xs_ring->error, XENSTORE_ERROR_NONE);
	XEN_EXPECT("req_prod after reconnection", xs_ring->req_prod, 0);
	XEN_EXPECT("rsp_prod after reconnection", xs_ring->rsp_prod, 0);
	expect_read("name", "kit-xs");
	printf("xen_xenstore: hostile message ignored, reconnection ok\n");
}

static void wait_for_shutdown(uint64_t mode)
{
	if (mode != 3) {
		XEN_EXPECT("watch control/shutdown", xs_watch("control/shutdown", "shutdown"), 0);
		expect_event("control/shutdown", "shutdown");
	}
	printf("xen_xenstore: waiting for control/shutdown\n");
	uint64_t deadline = xen_now() + XEN_MS(120000);
	while (xen_now() < deadline) {
		char p[128], t[64];
		if (xs_next_event(p, sizeof(p), t, sizeof(t), deadline))
			break;
		int rc = xs_read(0, "control/shutdown", buf, sizeof(buf));
		if (rc || !buf[0] || mode == 2)
			continue;
		printf("XS-SHUTDOWN %s\n", buf);
		xs_write(0, "control/shutdown", "");	/* acknowledged (manage.c shutdown_handler) */
		if (!strcmp(buf, "poweroff")) {
			struct sched_shutdown sd = { SHUTDOWN_poweroff };
			long r = HYPERVISOR_sched_op(SCHEDOP_shutdown, &sd);
			kit_fail("xen_xenstore: SCHEDOP_shutdown(poweroff) returned %ld", r);
		}
		kit_fail("xen_xenstore: unexpected shutdown request %s", buf);
	}
	kit_fail("xen_xenstore: no shutdown request within 120 s");
}

void kit_main(void)
{
	printf("xen_xenstore: xenstore through the ring from the HVM params\n");
	xen_test_start("xen_xenstore");
	xen_use_upcall_vector();
	setup_and_nodes();
	permissions_and_errors();
	transactions();
	watches();
	malformed_and_quotas();
	hostile_message_and_reconnect();
	uint64_t mode = xen_cmdline_u64("shutdown", 0);
	if (mode)
		wait_for_shutdown(mode);
	xen_pass();
}
