"""The Xen guest ABI (x86, HVM guests), declared once from Xen's public headers.

Every constant and struct of xen/include/public/*.h (xen-project/xen, current
Xen, 4.17 and later) that the emulation needs lives in this package, one module
per header, each item with a comment naming its header (paths relative to
xen/include/public/).  Nothing else in the project re-types these numbers or
offsets: ``from xen import abi`` and use ``abi.X``.

=====================  ==================================================
module                 header(s)
=====================  ==================================================
``xen.abi.xen``        xen.h, arch-x86/xen.h, arch-x86/xen-x86_{64,32}.h
``xen.abi.errno``      errno.h
``xen.abi.event_channel``  event_channel.h
``xen.abi.vcpu``       vcpu.h
``xen.abi.sched``      sched.h
``xen.abi.memory``     memory.h
``xen.abi.version``    version.h
``xen.abi.features``   features.h
``xen.abi.hvm``        hvm/hvm_op.h, hvm/params.h
``xen.abi.grant_table``  grant_table.h
``xen.abi.physdev``    physdev.h
``xen.abi.cpuid``      arch-x86/cpuid.h
``xen.abi.console``    io/console.h; the toolstack's HVM special pages (xenguest.h)
``xen.abi.xenstore``   io/xs_wire.h
``xen.abi._layout``    the C layout machinery (no header)
=====================  ==================================================

hvm/start_info.h (PVH boot) is declared in vmm/boot/pvh.py, not here.

Two ABIs, ``"64"`` (x86_64) and ``"32"`` (x86_32: the compat layout a 32-bit
HVM guest uses).  Longs, ``xen_ulong_t``, ``xen_pfn_t`` and guest handles are 8
vs 4 bytes, and ``uint64_t`` is 4-byte aligned on x86_32.

Naming:

* Structs are :class:`XenStruct` objects named like the C struct
  (``abi.vcpu_info``, ``abi.evtchn_bind_virq``), each declared once and laid out
  for both ABIs.  ``abi.layout(abi.vcpu_info, "32")`` is the construct Struct;
  ``abi.offset_of(struct, "field")`` computes an offset from a Struct;
  ``abi.sizeof(struct, abi)`` is C's sizeof.
* Constants are IntEnums named after their C prefix (``EVTCHNOP.send``,
  ``HVM_PARAM.STORE_PFN``, ``VIRQ.TIMER``), and every member is also exported
  under its flat C name (``EVTCHNOP_send``, ``HVM_PARAM_STORE_PFN``,
  ``VIRQ_TIMER``).  Hypercall numbers: :class:`Hypercall` and
  ``HYPERCALL_NAMES``; errors: :class:`XenErrno` (positive; hypercalls
  return the negative).
* Named offsets without a suffix are the same on both ABIs or the 64-bit ABI's;
  ``*_32`` are the compat ABI's (``*_64`` is spelled out too where they differ).
"""

from ._layout import *          # noqa: F401,F403
from .xen import *              # noqa: F401,F403
from .errno import *            # noqa: F401,F403
from .event_channel import *    # noqa: F401,F403
from .vcpu import *             # noqa: F401,F403
from .sched import *            # noqa: F401,F403
from .memory import *           # noqa: F401,F403
from .version import *          # noqa: F401,F403
from .features import *         # noqa: F401,F403
from .hvm import *              # noqa: F401,F403
from .grant_table import *      # noqa: F401,F403
from .physdev import *          # noqa: F401,F403
from .cpuid import *            # noqa: F401,F403
from .console import *          # noqa: F401,F403
from .xenstore import *         # noqa: F401,F403
