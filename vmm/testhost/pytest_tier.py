"""The ``xen_kvm`` pytest tier: tests that need a KVM with Xen support.

Register it once, in the top-level tests/conftest.py::

    pytest_plugins = ["vmm.testhost.pytest_tier"]

Items marked ``@pytest.mark.xen_kvm``:

* run normally when this machine's /dev/kvm reports KVM_CAP_XEN_HVM with
  INTERCEPT_HCALL (e.g. inside the nested test host);
* otherwise, with ``VMM_XEN_KVM_TIER=nested`` (set by ``make test``, which
  then runs them through the nested host with ``make test-nested``), are
  deselected here and the summary says where they run;
* otherwise, in CI (``CI`` set) or inside the nested host (``VMM_TESTHOST``,
  whose KVM should have Xen), fail: never skip them there;
* otherwise are skipped with the reason (and how to run them).

``python -m vmm.testhost.pytest_tier`` exits 0 when the host's KVM has Xen, 1
if not (for Makefiles).
"""

from __future__ import annotations

import os
import sys

KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL = 1 << 1   # include/uapi/linux/kvm.h (also kvm_bindings.consts)
MARKER = "xen_kvm"
MARKER_HELP = ("xen_kvm: needs a KVM with Xen support (KVM_CAP_XEN_HVM); "
               "runs through the nested test host otherwise")

_cache: tuple[bool, str] | None = None

try:
    from pytest import StashKey
    _CI_FAILURE = StashKey[str]()
except ImportError:  # imported outside pytest (`vmm testhost status`, Makefiles)
    _CI_FAILURE = None


def xen_hvm_flags(dev: str = "/dev/kvm") -> int:
    """KVM_CHECK_EXTENSION(KVM_CAP_XEN_HVM) on ``dev`` (raises OSError — KvmError — when unusable)."""
    from kvm_bindings import Kvm, consts
    kvm = Kvm(dev)
    try:
        return kvm.check_extension(consts.KVM_CAP_XEN_HVM)
    finally:
        kvm.close()


def host_xen_kvm() -> tuple[bool, str]:
    """(whether this machine's KVM can run the xen_kvm tier, a description)."""
    global _cache
    if _cache is None:
        try:
            flags = xen_hvm_flags()
        except OSError as e:
            _cache = (False, f"/dev/kvm unusable ({e.strerror})")
        else:
            if flags & KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL:
                _cache = (True, f"KVM_CAP_XEN_HVM = {flags:#x} (Xen-capable)")
            else:
                _cache = (False, f"KVM_CAP_XEN_HVM = {flags:#x} (no Xen support)")
    return _cache


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def nested_host_state() -> str:
    """One line on whether the nested host can run here (without installing anything)."""
    try:
        from vmm.testhost import prepare
        st = prepare.check()
    except Exception as e:  # noqa: BLE001 - a status line must never break collection
        return f"nested test host state unknown ({e})"
    if st.ready:
        return "the nested test host is ready: `make test-nested`"
    return ("the nested test host is not prepared (" + "; ".join(st.missing) +
            "): `make test-nested` installs and builds it")


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)


def pytest_collection_modifyitems(config, items) -> None:
    import pytest

    marked = [it for it in items if it.get_closest_marker(MARKER)]
    if not marked:
        return
    has, why = host_xen_kvm()
    if has:
        return
    inside = bool(os.environ.get("VMM_TESTHOST"))
    if os.environ.get("VMM_XEN_KVM_TIER") == "nested" and not inside:
        config.hook.pytest_deselected(items=marked)
        items[:] = [it for it in items if not it.get_closest_marker(MARKER)]
        config._vmm_xen_deselected = len(marked)
        return
    if inside:
        msg = (f"inside the nested test host, yet its KVM lacks Xen ({why}): "
               "are the Xen-enabled kvm modules broken? (`vmm testhost prepare --rebuild`)")
    elif in_ci():
        msg = (f"xen_kvm test on a host whose KVM lacks Xen ({why}): CI must run it through "
               "the nested test host (`make test` / `make test-nested`), not skip it")
    else:
        msg = None
    if msg:
        for it in marked:
            it.stash[_CI_FAILURE] = msg
        return
    reason = f"needs a KVM with Xen: host {why}; {nested_host_state()}"
    for it in marked:
        it.add_marker(pytest.mark.skip(reason=reason))


def pytest_runtest_setup(item) -> None:
    msg = item.stash.get(_CI_FAILURE, None)
    if msg:
        import pytest
        pytest.fail(msg, pytrace=False)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    n = getattr(config, "_vmm_xen_deselected", 0)
    if n:
        terminalreporter.write_line(
            f"{n} xen_kvm test(s) deselected here (host {host_xen_kvm()[1]}); "
            "`make test` runs them in the nested test host (`make test-nested`)")


if __name__ == "__main__":
    has, why = host_xen_kvm()
    print(f"host /dev/kvm: {why}")
    sys.exit(0 if has else 1)
