"""Shared fixtures: paths to built guests and a `vmm run` runner with a hard timeout."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# Every VMM the tests start (in process or as `vmm run`) checks the lock order
# (vmm/locks.py): a violation is an internal error, which fails the run.
os.environ.setdefault("VMM_LOCK_CHECK", "1")

# The xen_kvm tier: on this host if its KVM has Xen, else via the nested test host.
pytest_plugins = ["vmm.testhost.pytest_tier"]

ROOT = Path(__file__).resolve().parent.parent
GUEST_BUILD = ROOT / "guest-images" / "build"

# Every guest run is bounded twice: by the VMM's own --timeout, and by this
# wall-clock limit on the process (a hung VMM must fail the test, not CI).
HARD_TIMEOUT = 120


@dataclass
class RunResult:
    code: int
    out: str
    err: str


def guest_path(name: str) -> str:
    p = GUEST_BUILD / f"{name}.elf"
    if not p.exists():
        pytest.fail(f"guest image {p} is missing: run `make guest-images` (part of `make setup`)")
    return str(p)


def run_vmm(*args: str, timeout: float = HARD_TIMEOUT, stdin: bytes | None = b"", wrap: tuple = ()) -> RunResult:
    """``vmm run ARGS``; ``wrap``: a command to run it under (e.g. ``ip netns exec NS``)."""
    cmd = [*wrap, sys.executable, "-m", "vmm", *args]
    try:
        p = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"vmm did not finish within {timeout} s: {' '.join(cmd)}\n"
                    f"stdout: {e.stdout!r}\nstderr: {e.stderr!r}")
    r = RunResult(p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))
    if "vmm: internal error" in r.err:
        # A VMM bug fails the test whatever the guest printed (and whatever exit
        # status the test expects): vmm/errors.py.
        pytest.fail(f"VMM internal error in {' '.join(cmd)}:\n{r.err[-4000:]}")
    return r


@pytest.fixture
def vmm():
    return run_vmm


@pytest.fixture
def guest():
    return guest_path


def kvm_available() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)
