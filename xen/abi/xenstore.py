"""public/io/xs_wire.h: the xenstore wire protocol (message header, message types,
error names) and the shared ring page (struct xenstore_domain_interface).

Semantics: docs/misc/xenstore.txt (messages) and docs/misc/xenstore-ring.txt (the
ring page).  Both structs are the same on both ABIs (only uint32_t and char).
"""

from __future__ import annotations

from enum import IntEnum

from ._layout import XenStruct, c_names, exports, raw, u32
from .errno import XenErrno


class XS(IntEnum):
    """enum xsd_sockmsg_type (io/xs_wire.h).  XS_DEBUG is an alias of XS_CONTROL;
    20 (XS_RESTRICT) has been removed and is invalid."""
    CONTROL = 0
    DIRECTORY = 1
    READ = 2
    GET_PERMS = 3
    WATCH = 4
    UNWATCH = 5
    TRANSACTION_START = 6
    TRANSACTION_END = 7
    INTRODUCE = 8
    RELEASE = 9
    GET_DOMAIN_PATH = 10
    WRITE = 11
    MKDIR = 12
    RM = 13
    SET_PERMS = 14
    WATCH_EVENT = 15            # only in replies
    ERROR = 16                  # only in replies
    IS_DOMAIN_INTRODUCED = 17
    RESUME = 18
    SET_TARGET = 19
    RESET_WATCHES = 21          # XS_SET_TARGET + 2
    DIRECTORY_PART = 22
    GET_FEATURE = 23
    SET_FEATURE = 24
    GET_QUOTA = 25
    SET_QUOTA = 26
    INVALID = 0xFFFF            # "Guaranteed to remain an invalid type"


XS_TYPE_COUNT = 27              # io/xs_wire.h: "Number of valid types."


class XS_WATCH_TYPE(IntEnum):
    """enum xs_watch_type (io/xs_wire.h): the strings of a WATCH_EVENT payload."""
    PATH = 0
    TOKEN = 1


# io/xs_wire.h: xsd_errors[], "XSD_ERROR(x) { x, #x }".  Errors travel as their
# names; the order is the header's ("New errors should be added at the end").
XSD_ERRORS: tuple[tuple[XenErrno, str], ...] = tuple((e, e.name) for e in (
    XenErrno.EINVAL, XenErrno.EACCES, XenErrno.EEXIST, XenErrno.EISDIR, XenErrno.ENOENT,
    XenErrno.ENOMEM, XenErrno.ENOSPC, XenErrno.EIO, XenErrno.ENOTEMPTY, XenErrno.ENOSYS,
    XenErrno.EROFS, XenErrno.EBUSY, XenErrno.EAGAIN, XenErrno.EISCONN, XenErrno.E2BIG,
    XenErrno.EPERM))

# io/xs_wire.h: struct xsd_sockmsg, followed by len bytes of payload.
xsd_sockmsg = XenStruct(
    "xsd_sockmsg", "io/xs_wire.h",
    "type" / u32,       # XS_???
    "req_id" / u32,     # Request identifier, echoed in daemon's response.
    "tx_id" / u32,      # Transaction id (0 if not related to a transaction).
    "len" / u32,        # Length of data following this.
)

XENSTORE_RING_SIZE = 1024       # io/xs_wire.h; XENSTORE_RING_IDX is a free-running uint32_t


def MASK_XENSTORE_IDX(idx: int) -> int:
    """io/xs_wire.h: #define MASK_XENSTORE_IDX(idx) ((idx) & (XENSTORE_RING_SIZE-1))"""
    return idx & (XENSTORE_RING_SIZE - 1)


# io/xs_wire.h: struct xenstore_domain_interface (docs/misc/xenstore-ring.txt's table).
xenstore_domain_interface = XenStruct(
    "xenstore_domain_interface", "io/xs_wire.h",
    "req" / raw(XENSTORE_RING_SIZE),    # Requests to xenstore daemon.
    "rsp" / raw(XENSTORE_RING_SIZE),    # Replies and async watch events.
    "req_cons" / u32,
    "req_prod" / u32,
    "rsp_cons" / u32,
    "rsp_prod" / u32,
    "server_features" / u32,            # Bitmap of features supported by the server
    "connection" / u32,
    "error" / u32,
    "evtchn_port" / u32,                # filled in by Xen for dom0less; 0: XS_INTRODUCE's
)

XENSTORE_PAYLOAD_MAX = 4096     # io/xs_wire.h: "Violating this is very bad."
XENSTORE_ABS_PATH_MAX = 3072    # io/xs_wire.h: "Violating these just gets you an error back"
XENSTORE_REL_PATH_MAX = 2048

# io/xs_wire.h: server_features bits.
XENSTORE_SERVER_FEATURE_RECONNECTION = 1    # The ability to reconnect a ring
XENSTORE_SERVER_FEATURE_ERROR = 2           # The presence of the "error" field in the ring page
XENSTORE_SERVER_FEATURE_WATCHDEPTH = 4      # XS_WATCH takes a <depth> parameter
XENSTORE_SERVER_FEATURE_DOMID_ANY = 8       # DOMID_ANY usable in node permissions

# io/xs_wire.h: values of the connection field.
XENSTORE_CONNECTED = 0          # the steady-state
XENSTORE_RECONNECT = 1          # reconnect in progress

# io/xs_wire.h: values of the error field.
XENSTORE_ERROR_NONE = 0         # No error
XENSTORE_ERROR_COMM = 1         # Communication problem
XENSTORE_ERROR_RINGIDX = 2      # Invalid ring index
XENSTORE_ERROR_PROTO = 3        # Protocol violation (payload too long)

globals().update(c_names(XS, "XS_"))
XS_DEBUG = XS.CONTROL           # io/xs_wire.h: #define XS_DEBUG XS_CONTROL
globals().update(c_names(XS_WATCH_TYPE, "XS_WATCH_"))

__all__ = exports(globals())
