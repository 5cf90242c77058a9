/*
 * A synchronous xenstore client over the ring page (public/io/xs_wire.h,
 * docs/misc/xenstore-ring.txt; Linux's drivers/xen/xenbus/xenbus_comms.c is the
 * model): one request at a time, its reply awaited; watch events that arrive in
 * between are kept for xs_next_event.
 */
#include "../xen.h"

#define XS_WAIT_MS	5000
#define XS_EVENTS	16

volatile struct xenstore_domain_interface *xs_ring;
evtchn_port_t xs_port;
static uint32_t next_req_id = 1;

static struct {
	char path[128], token[64];
} events[XS_EVENTS];
static unsigned ev_head, ev_count;

void xs_init(unsigned map_slot)
{
	uint64_t pfn = 0, evtchn = 0;
	if (xen_hvm_get_param(HVM_PARAM_STORE_PFN, &pfn) || xen_hvm_get_param(HVM_PARAM_STORE_EVTCHN, &evtchn) ||
	    !pfn || !evtchn || evtchn >= XEN_KIT_MAX_PORTS)
		kit_fail("xs: no xenstore (STORE_PFN %#lx, STORE_EVTCHN %lu)", (unsigned long)pfn,
			 (unsigned long)evtchn);
	xs_ring = xen_map_4k(map_slot, pfn << 12);
	xs_port = (evtchn_port_t)evtchn;
	xen_evtchn_unmask(xs_port);
}

void xs_put(const void *data, uint32_t n)
{
	const char *d = data;
	while (n) {
		uint32_t cons = xs_ring->req_cons, prod = xs_ring->req_prod;
		uint32_t room = XENSTORE_RING_SIZE - (prod - cons), k = 0;
		if (room == 0) {
			xen_evtchn_send(xs_port);
			if (!XEN_WAIT_UNTIL(xs_ring->req_cons != cons, xen_now() + XEN_MS(XS_WAIT_MS)))
				kit_fail("xs: the daemon doesn't take requests (req %u..%u)", cons, prod);
			continue;
		}
		for (; k < room && k < n; k++)
			xs_ring->req[MASK_XENSTORE_IDX(prod + k)] = d[k];
		__atomic_thread_fence(__ATOMIC_RELEASE);	/* data before the index */
		xs_ring->req_prod = prod + k;
		d += k;
		n -= k;
	}
	xen_evtchn_send(xs_port);
}

/* n bytes of the response stream; false if they didn't come by the deadline */
static bool get(void *data, uint32_t n, uint64_t deadline)
{
	char *d = data;
	while (n) {
		uint32_t cons = xs_ring->rsp_cons;
		if (!XEN_WAIT_UNTIL(xs_ring->rsp_prod != cons, deadline))
			return false;
		uint32_t prod = xs_ring->rsp_prod;
		if (prod - cons > XENSTORE_RING_SIZE)
			kit_fail("xs: response indexes %u..%u", cons, prod);
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		uint32_t k = 0;
		for (; cons + k != prod && k < n; k++)
			d[k] = xs_ring->rsp[MASK_XENSTORE_IDX(cons + k)];
		__atomic_thread_fence(__ATOMIC_RELEASE);	/* copied before the space is given back */
		xs_ring->rsp_cons = cons + k;
		xen_evtchn_send(xs_port);			/* room for more (xenbus: after every read) */
		d += k;
		n -= k;
	}
	return true;
}

static int errno_of(const char *name)
{
	static const struct { const char *name; int err; } names[] = {
		{ "EINVAL", 22 }, { "EACCES", 13 }, { "EEXIST", 17 }, { "EISDIR", 21 }, { "ENOENT", 2 },
		{ "ENOMEM", 12 }, { "ENOSPC", 28 }, { "EIO", 5 }, { "ENOTEMPTY", 39 }, { "ENOSYS", 38 },
		{ "EROFS", 30 }, { "EBUSY", 16 }, { "EAGAIN", 11 }, { "EISCONN", 106 }, { "E2BIG", 7 },
		{ "EPERM", 1 },
	};
	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(name, names[i].name))
			return names[i].err;
	kit_fail("xs: unknown error %s", name);
}

static void keep_event(const char *payload, uint32_t len)
{
	const char *path = payload, *token = payload + strlen(payload) + 1;
	if (token >= payload + len)
		kit_fail("xs: malformed watch event");
	if (ev_count == XS_EVENTS)
		kit_fail("xs: more than %u watch events pending", XS_EVENTS);
	unsigned i = (ev_head + ev_count++) % XS_EVENTS;
	if (strlen(path) >= sizeof(events[i].path) || strlen(token) >= sizeof(events[i].token))
		kit_fail("xs: watch event too long");
	memcpy(events[i].path, path, strlen(path) + 1);
	memcpy(events[i].token, token, strlen(token) + 1);
}

/* the next message: its header, payload NUL-terminated in buf (XENSTORE_PAYLOAD_MAX + 1) */
static bool next_message(struct xsd_sockmsg *h, char *buf, uint64_t deadline)
{
	if (!get(h, sizeof(*h), deadline))
		return false;
	if (h->len > XENSTORE_PAYLOAD_MAX)
		kit_fail("xs: a message of %u bytes", h->len);
	if (!get(buf, h->len, xen_now() + XEN_MS(XS_WAIT_MS)))
		kit_fail("xs: a message's payload never came");
	buf[h->len] = 0;
	return true;
}

int xs_request(uint32_t type, uint32_t tx, const void *payload, uint32_t len, char *out, uint32_t outlen,
	       uint32_t *outlen_got)
{
	static char buf[XENSTORE_PAYLOAD_MAX + 1];
	struct xsd_sockmsg h = { type, next_req_id++, tx, len };
	xs_put(&h, sizeof(h));
	xs_put(payload, len);
	uint64_t deadline = xen_now() + XEN_MS(XS_WAIT_MS);
	for (;;) {
		struct xsd_sockmsg r;
		if (!next_message(&r, buf, deadline))
			return -1;
		if (r.type == XS_WATCH_EVENT) {
			keep_event(buf, r.len);
			continue;
		}
		if (r.req_id != h.req_id)
			kit_fail("xs: reply to request %u, expected %u", r.req_id, h.req_id);
		if (r.type == XS_ERROR)
			return errno_of(buf);
		if (r.type != type)
			kit_fail("xs: reply of type %u to a request of type %u", r.type, type);
		if (out) {
			if (r.len >= outlen)
				kit_fail("xs: a reply of %u bytes for a buffer of %u", r.len, outlen);
			memcpy(out, buf, r.len + 1);
		}
		if (outlen_got)
			*outlen_got = r.len;
		return 0;
	}
}

int xs_read(uint32_t tx, const char *path, char *out, uint32_t outlen)
{
	return xs_request(XS_READ, tx, path, strlen(path) + 1, out, outlen, 0);
}

int xs_write(uint32_t tx, const char *path, const char *value)
{
	static char msg[XENSTORE_PAYLOAD_MAX];
	uint32_t p = strlen(path) + 1, v = strlen(value);
	if (p + v > sizeof(msg))
		kit_fail("xs: write of %u bytes", p + v);
	memcpy(msg, path, p);
	memcpy(msg + p, value, v);
	return xs_request(XS_WRITE, tx, msg, p + v, 0, 0, 0);
}

int xs_simple(uint32_t type, uint32_t tx, const char *arg)
{
	return xs_request(type, tx, arg, strlen(arg) + 1, 0, 0, 0);
}

int xs_tx_start(uint32_t *tx)
{
	char id[16];
	int rc = xs_request(XS_TRANSACTION_START, 0, "", 1, id, sizeof(id), 0);
	if (rc)
		return rc;
	uint32_t v = 0;
	for (const char *c = id; *c; c++)
		v = v * 10 + (uint32_t)(*c - '0');
	*tx = v;
	return 0;
}

int xs_tx_end(uint32_t tx, bool commit)
{
	return xs_request(XS_TRANSACTION_END, tx, commit ? "T" : "F", 2, 0, 0, 0);
}

static int watch_op(uint32_t type, const char *path, const char *token)
{
	char msg[256];
	uint32_t p = strlen(path) + 1, t = strlen(token) + 1;
	if (p + t > sizeof(msg))
		kit_fail("xs: watch arguments too long");
	memcpy(msg, path, p);
	memcpy(msg + p, token, t);
	return xs_request(type, 0, msg, p + t, 0, 0, 0);
}

int xs_watch(const char *path, const char *token)
{
	return watch_op(XS_WATCH, path, token);
}

int xs_unwatch(const char *path, const char *token)
{
	return watch_op(XS_UNWATCH, path, token);
}

int xs_next_event(char *path, uint32_t plen, char *token, uint32_t tlen, uint64_t deadline_ns)
{
	static char buf[XENSTORE_PAYLOAD_MAX + 1];
	while (!ev_count) {
		struct xsd_sockmsg r;
		if (!next_message(&r, buf, deadline_ns))
			return -1;
		if (r.type != XS_WATCH_EVENT)
			kit_fail("xs: an unrequested reply (type %u, req %u)", r.type, r.req_id);
		keep_event(buf, r.len);
	}
	unsigned i = ev_head;
	ev_head = (ev_head + 1) % XS_EVENTS;
	ev_count--;
	if (strlen(events[i].path) >= plen || strlen(events[i].token) >= tlen)
		kit_fail("xs: event buffer too small");
	memcpy(path, events[i].path, strlen(events[i].path) + 1);
	memcpy(token, events[i].token, strlen(events[i].token) + 1);
	return 0;
}
