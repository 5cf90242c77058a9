"""Bad user input: one clear line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import pytest

from vmm import exitcodes


def assert_user_error(r, *needles):
    assert r.code == exitcodes.USER_ERROR, r
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{r.err}"
    assert "Traceback" not in r.err
    for n in needles:
        assert n in lines[0], lines[0]


def test_missing_kernel(vmm):
    assert_user_error(vmm("run", "--kernel", "/nonexistent/vmlinuz"), "kernel not found", "/nonexistent/vmlinuz")


def test_missing_initrd(vmm, guest):
    assert_user_error(vmm("run", "--kernel", guest("hello"), "--initrd", "/nope.img"), "initrd not found")


def test_kernel_is_directory(vmm, tmp_path):
    assert_user_error(vmm("run", "--kernel", str(tmp_path)), "directory")


def test_not_elf_nor_bzimage(vmm, tmp_path):
    p = tmp_path / "junk"
    p.write_bytes(b"#!/bin/sh\necho not a kernel\n" * 20)
    assert_user_error(vmm("run", "--kernel", str(p)), "not a PVH ELF or a bzImage")


def test_tiny_file(vmm, tmp_path):
    p = tmp_path / "tiny"
    p.write_bytes(b"abc")
    assert_user_error(vmm("run", "--kernel", str(p)), "too small")


def test_truncated_elf(vmm, guest, tmp_path):
    data = open(guest("hello"), "rb").read()
    p = tmp_path / "trunc.elf"
    p.write_bytes(data[:200])
    assert_user_error(vmm("run", "--kernel", str(p)), "truncated")


def test_truncated_bzimage(vmm, tmp_path):
    from test_boot_bzimage import debian_bzimage
    data = open(debian_bzimage(), "rb").read()
    p = tmp_path / "trunc.bz"
    p.write_bytes(data[:100000])
    assert_user_error(vmm("run", "--kernel", str(p)), "truncated")


def test_elf_without_pvh_note(vmm, tmp_path):
    import sys
    assert_user_error(vmm("run", "--kernel", sys.executable), "XEN_ELFNOTE_PHYS32_ENTRY")


@pytest.mark.parametrize("size", ["12X", "abc", "-5M", "1.5G", "0"])
def test_bad_memory_size(vmm, guest, size):
    r = vmm("run", "--kernel", guest("hello"), "--memory", size)
    assert_user_error(r, "--memory")


def test_memory_too_small(vmm, guest):
    assert_user_error(vmm("run", "--kernel", guest("hello"), "--memory", "1M"), "minimum")


def test_initrd_too_large_for_memory(vmm, guest, tmp_path):
    p = tmp_path / "big.img"
    with open(p, "wb") as f:
        f.truncate(40 << 20)
    assert_user_error(vmm("run", "--kernel", guest("hello"), "--initrd", str(p), "--memory", "32M"),
                      "initrd", "larger --memory")


def test_bad_serial_spec(vmm, guest):
    assert_user_error(vmm("run", "--kernel", guest("hello"), "--serial", "tcp:1234"), "--serial")


@pytest.mark.parametrize("spec", ["stdio", "file:", "tcp:1234"])
def test_bad_debugcon_spec(vmm, guest, spec):
    assert_user_error(vmm("run", "--kernel", guest("hello"), "--debugcon", spec), "--debugcon")


def test_bad_cpus(vmm, guest):
    assert_user_error(vmm("run", "--kernel", guest("hello"), "--cpus", "0"), "--cpus")


def test_too_many_cpus(vmm, guest):
    assert_user_error(vmm("run", "--kernel", guest("hello"), "--cpus", "100000"), "vCPUs")


def test_bad_timeout(vmm, guest):
    assert_user_error(vmm("run", "--kernel", guest("hello"), "--timeout", "soon"), "--timeout")


def test_unknown_option(vmm):
    assert_user_error(vmm("run", "--kernel", "x", "--bogus"), "unrecognized")


def test_no_command(vmm):
    r = vmm()
    assert r.code == exitcodes.USER_ERROR and "usage" in r.err


def test_version_and_help(vmm):
    r = vmm("--version")
    assert r.code == 0 and r.out.startswith("vmm ")
    r = vmm("run", "--help")
    assert r.code == 0 and "--kernel" in r.out and "--trace" in r.out and "124 timeout" in r.out


def test_caps(vmm):
    r = vmm("caps")
    assert r.code == 0
    keys = dict(line.split(None, 1) for line in r.out.splitlines())
    assert keys["api_version"] == "12"
    assert "xen_hvm" in keys and "split_irqchip" in keys and "emulated" in keys


@pytest.mark.parametrize("version", ["4", "4.x", "1.0", "4.999"])
def test_bad_xen_version(vmm, guest, version):
    assert_user_error(vmm("run", "--kernel", guest("hello"), "--xen", "--xen-version", version), "--xen-version")


def test_xen_needs_pci(vmm, guest):
    assert_user_error(vmm("run", "--kernel", guest("hello"), "--xen", "--no-pci"), "PCI")


@pytest.mark.parametrize("size", ["30G", "100T"])
def test_memory_more_than_the_host_maps(vmm, guest, size):
    """More RAM than this 24 GiB host will map (30G) or than any host has (100T): one
    line, exit 2 -- not a traceback from mmap."""
    assert_user_error(vmm("run", "--kernel", guest("hello"), "--memory", size), "--memory", "more guest memory")


@pytest.mark.parametrize("n", ["8", "100000"])
def test_xen_nr_pirqs_out_of_range(vmm, guest, n):
    assert_user_error(vmm("run", "--xen", "--kernel", guest("xen_smoke"), "--xen-nr-pirqs", n), "--xen-nr-pirqs")


@pytest.mark.parametrize("args,needle", [
    (["--xen", "--xenstore", "no-equals-sign"], "PATH=VALUE"),
    (["--xenstore", "data/x=1"], "need --xen"),
    (["--xen", "--xenstore", "data//x=1"], "--xenstore"),          # xenstored: EINVAL
    (["--xen", "--xen-shutdown-timeout", "-1"], "--xen-shutdown-timeout"),
])
def test_bad_xenstore_and_shutdown_options(vmm, guest, args, needle):
    assert_user_error(vmm("run", "--kernel", guest("hello"), "--timeout", "30", *args), needle)
