"""cffi bindings to the Linux KVM API (the only package that issues KVM ioctls).

``consts`` is the compiled library object: every ``KVM_*`` constant used by the
project is an attribute of it, with the value from the system's <linux/kvm.h>.
``ffi`` allocates and casts the structs declared in ``_build.py``.
"""

from kvm_bindings._kvm import ffi, lib as consts
from kvm_bindings.kvm import (
    IrqchipRoute,
    Kvm,
    KvmError,
    MsiRoute,
    Route,
    VcpuFd,
    VmFd,
    XenEvtchnRoute,
    buffer_address,
)

__all__ = [
    "ffi", "consts", "Kvm", "KvmError", "VmFd", "VcpuFd", "IrqchipRoute", "MsiRoute",
    "XenEvtchnRoute", "Route", "buffer_address",
]
