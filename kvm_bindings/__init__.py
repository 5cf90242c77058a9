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
    atomic_and32,
    atomic_and64,
    atomic_or32,
    atomic_or64,
    atomic_cmpxchg32,
    atomic_xchg8,
    atomic_xchg32,
    buffer_address,
    run_vcpu_fd,
    run_vcpu_cached,
)

__all__ = [
    "ffi", "consts", "Kvm", "KvmError", "VmFd", "VcpuFd", "IrqchipRoute", "MsiRoute",
    "XenEvtchnRoute", "Route", "buffer_address", "run_vcpu_fd", "run_vcpu_cached",
    "atomic_or64", "atomic_and64", "atomic_or32", "atomic_and32", "atomic_xchg8",
    "atomic_xchg32", "atomic_cmpxchg32",
]
