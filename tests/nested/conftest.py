"""Fixtures for the nested test host's tests.

* ``testhost`` (host tier): runs ``vmm testhost run`` as the user would.
  Needs the test host prepared (`make testhost-prepare`); when it is not, the
  tests skip with the reason -- except in CI, where the fixture prepares it.
* ``linux_guest`` (xen_kvm tier): the `make linux-guest` initramfs, built
  here if missing.

The ``xen_kvm`` marker and its collection hook live in vmm.testhost.pytest_tier
(registered by tests/conftest.py).
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from vmm.testhost import prepare
from vmm.testhost.pytest_tier import in_ci

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Outcome:
    code: int
    out: str
    err: str
    seconds: float


@pytest.fixture(scope="session")
def testhost_ready():
    st = prepare.check()
    if st.ready:
        return st
    reason = "nested test host not prepared: " + "; ".join(st.missing) + " -- run `make testhost-prepare`"
    if not in_ci():
        pytest.skip(reason)
    # CI never skips these: prepare here (apt-get + module build, a few minutes at most).
    from vmm.testhost.config import TesthostError
    try:
        prepare.prepare(lambda msg: print(msg, file=sys.stderr))
    except TesthostError as e:
        pytest.fail(f"{reason}; preparing it failed: {e}", pytrace=False)
    return prepare.check()


@pytest.fixture
def testhost(testhost_ready):
    """run(*cmd, timeout=, memory=, cwd=, env=) -> Outcome, via `python -m vmm testhost run`."""

    def run(*cmd: str, timeout: float = 120, memory: str | None = None, cwd=None, env=None,
            hard_timeout: float | None = None) -> Outcome:
        args = [sys.executable, "-m", "vmm", "testhost", "run", "--no-prepare", "--timeout", str(timeout)]
        if memory:
            args += ["--memory", memory]
        t0 = time.monotonic()
        try:
            p = subprocess.run([*args, "--", *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               cwd=cwd or ROOT, env=env, timeout=hard_timeout or timeout + 60)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"`vmm testhost run` outlived its own --timeout {timeout}: {e}")
        return Outcome(p.returncode, p.stdout.decode(errors="replace"),
                       p.stderr.decode(errors="replace"), time.monotonic() - t0)

    return run


@pytest.fixture(scope="session")
def linux_guest() -> Path:
    """The busybox initramfs of `make linux-guest` for the packaged kernel."""
    from vmm.testhost import initramfs, packages
    from vmm.testhost.config import linux_guest_dir
    info = packages.kernel_info()
    out = linux_guest_dir(info.abi) / "initramfs.cpio"
    # `make linux-guest` builds it too; rebuilt here only if init or busybox changed.
    out.parent.mkdir(parents=True, exist_ok=True)
    return initramfs.build_linux_guest(info.modules_dir, out)
