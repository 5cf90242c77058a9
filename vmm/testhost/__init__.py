"""The nested test host: run a command of ours inside a VM whose KVM supports Xen.

Our machines' ``/dev/kvm`` (and most distribution kernels) lack CONFIG_KVM_XEN.
``vmm testhost run -- CMD...`` boots Debian's kernel under QEMU/TCG with nested
SVM, loads kvm.ko/kvm-amd.ko rebuilt with CONFIG_KVM_XEN, shows the host's root
file system read-only (9p) under a tmpfs overlay so every absolute path works
as on the host, runs CMD in the caller's cwd and hands back its stdout, stderr
and exit status.  See docs/testhost.md.

Stdlib only: this package must not import kvm_bindings, devices or xen.

Modules:
  config     -- cache folders, repository paths, errors
  packages   -- Debian packages (apt-get), kernel ABI derived from linux-image-amd64
  modules    -- the Xen-enabled out-of-tree kvm.ko / kvm-amd.ko build
  vmlinux    -- the PVH-bootable vmlinux extracted from the packaged bzImage
  initramfs  -- cpio writer; the outer VM's and `make linux-guest`'s initramfs
  launcher   -- QEMU command line, virtio-serial plumbing, timeout, console log
  cli        -- ``add_parser(subparsers)`` for ``vmm testhost`` and ``main(argv)``
  pytest_tier -- the ``xen_kvm`` pytest tier (marker and collection hook)
"""

from vmm.testhost.config import TesthostError

__all__ = ["TesthostError"]
