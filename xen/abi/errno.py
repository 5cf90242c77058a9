"""public/errno.h: Xen's error numbers.  Hypercalls return the negative value."""

from __future__ import annotations

from enum import IntEnum

from ._layout import exports


class XenErrno(IntEnum):
    """XEN_E* (errno.h; values originate from x86 Linux).  EINTR and ERESTART
    are "#ifdef __XEN__": Xen-internal, "should never be exposed to the guest".
    EWOULDBLOCK and EDEADLOCK are aliases."""
    EPERM = 1            # Operation not permitted
    ENOENT = 2           # No such file or directory
    ESRCH = 3            # No such process
    EINTR = 4            # Interrupted system call (Xen-internal)
    EIO = 5              # I/O error
    ENXIO = 6            # No such device or address
    E2BIG = 7            # Arg list too long
    ENOEXEC = 8          # Exec format error
    EBADF = 9            # Bad file number
    ECHILD = 10          # No child processes
    EAGAIN = 11          # Try again
    EWOULDBLOCK = 11     # Operation would block.  Aliases EAGAIN
    ENOMEM = 12          # Out of memory
    EACCES = 13          # Permission denied
    EFAULT = 14          # Bad address
    EBUSY = 16           # Device or resource busy
    EEXIST = 17          # File exists
    EXDEV = 18           # Cross-device link
    ENODEV = 19          # No such device
    ENOTDIR = 20         # Not a directory
    EISDIR = 21          # Is a directory
    EINVAL = 22          # Invalid argument
    ENFILE = 23          # File table overflow
    EMFILE = 24          # Too many open files
    ENOSPC = 28          # No space left on device
    EROFS = 30           # Read-only file system
    EMLINK = 31          # Too many links
    EDOM = 33            # Math argument out of domain of func
    ERANGE = 34          # Math result not representable
    EDEADLK = 35         # Resource deadlock would occur
    EDEADLOCK = 35       # Aliases EDEADLK
    ENAMETOOLONG = 36    # File name too long
    ENOLCK = 37          # No record locks available
    ENOSYS = 38          # Function not implemented
    ENOTEMPTY = 39       # Directory not empty
    ENODATA = 61         # No data available
    ETIME = 62           # Timer expired
    EBADMSG = 74         # Not a data message
    EOVERFLOW = 75       # Value too large for defined data type
    EILSEQ = 84          # Illegal byte sequence
    ERESTART = 85        # Interrupted system call should be restarted (Xen-internal)
    ENOTSOCK = 88        # Socket operation on non-socket
    EMSGSIZE = 90        # Message too large.
    EOPNOTSUPP = 95      # Operation not supported on transport endpoint
    EADDRINUSE = 98      # Address already in use
    EADDRNOTAVAIL = 99   # Cannot assign requested address
    ENOBUFS = 105        # No buffer space available
    EISCONN = 106        # Transport endpoint is already connected
    ENOTCONN = 107       # Transport endpoint is not connected
    ETIMEDOUT = 110      # Connection timed out
    ECONNREFUSED = 111   # Connection refused


__all__ = exports(globals())
