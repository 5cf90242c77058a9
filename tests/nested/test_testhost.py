"""`vmm testhost run` itself, end to end: each test boots the outer VM (~2.5 s)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest


def _console_log(err: str) -> Path:
    m = re.search(r"[Cc]onsole log(?: kept)?: (\S+)", err)
    assert m, f"no console log path in stderr:\n{err}"
    return Path(m.group(1))


def test_exit_status_and_separate_streams(testhost):
    r = testhost("sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 7")
    assert r.code == 7, r.err
    assert r.out == "to-stdout\n"
    assert "to-stderr\n" in r.err and "to-stdout" not in r.err
    # a failing command keeps the outer console log, and says where
    log = _console_log(r.err)
    assert log.exists()


def test_cwd_env_and_read_only_share(testhost, tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("written on the host\n")
    env = dict(os.environ, FOO="bar baz")
    r = testhost("sh", "-c", 'pwd; cat hostfile; echo "$FOO|$VMM_TESTHOST"; '
                 'echo changed > hostfile && cat hostfile',
                 cwd=tmp_path, env=env)
    assert r.code == 0, r.err
    assert r.out.splitlines() == [str(tmp_path), "written on the host", "bar baz|1", "changed"]
    # writes inside land in the guest's tmpfs overlay, never on the host
    assert hostfile.read_text() == "written on the host\n"
    assert "console log" not in r.err   # removed on success


def test_nested_kvm_has_xen_with_intercept_hcall(testhost):
    # The stdlib probe of vmm.testhost.pytest_tier: exit 0 iff KVM_CAP_XEN_HVM has INTERCEPT_HCALL.
    r = testhost(sys.executable, "-m", "vmm.testhost.pytest_tier")
    assert r.code == 0, r.out + r.err
    m = re.search(r"KVM_CAP_XEN_HVM = (0x[0-9a-f]+)", r.out)
    assert m, r.out
    assert int(m.group(1), 16) & 0x3F == 0x3F, r.out


def test_timeout_kills_a_hung_guest(testhost):
    r = testhost("sleep", "600", timeout=5, hard_timeout=60)
    assert r.code == 124, r.err
    assert "timed out after 5 s" in r.err
    assert _console_log(r.err).exists()
    dump = re.search(r"QEMU monitor dump: (\S+)", r.err)       # what a frozen outer VM was doing
    assert dump and "RIP=" in Path(dump[1]).read_text(errors="replace"), r.err
    assert r.seconds < 40


def test_command_not_found_is_127(testhost):
    r = testhost("/nonexistent/command")
    assert r.code == 127, r.err


@pytest.mark.parametrize("argv", [["run"], ["run", "--"]])
def test_no_command_is_a_usage_error(argv):
    import subprocess
    p = subprocess.run([sys.executable, "-m", "vmm", "testhost", *argv],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert p.returncode == 2
    assert "no command given" in p.stderr
