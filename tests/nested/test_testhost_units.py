"""The nested test host's parts that need no VM: quick, run everywhere."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vmm.testhost import initramfs, launcher, modules, pytest_tier, vmlinux
from vmm.testhost import config

HostError = config.TesthostError


def parse_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    entries, off = {}, 0
    while True:
        assert data[off:off + 6] == b"070701"
        f = [int(data[off + 6 + 8 * i: off + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = f[1], f[6], f[11]
        name = data[off + 110: off + 110 + namesize - 1].decode()
        off = (off + 110 + namesize + 3) & ~3
        body = data[off: off + size]
        off = (off + size + 3) & ~3
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, body)


def test_cpio_newc_layout():
    c = initramfs.Cpio()
    c.file("bin/busybox", b"\x7fELF12345", 0o755)
    c.symlink("bin/sh", "busybox")
    c.dir("proc")
    e = parse_newc(c.bytes())
    assert e["bin"][0] == 0o040755 and e["proc"][0] == 0o040755
    assert e["bin/busybox"] == (0o100755, b"\x7fELF12345")
    assert e["bin/sh"] == (0o120777, b"busybox")
    assert list(e).index("bin") < list(e).index("bin/busybox")   # parents first


def test_module_order_puts_dependencies_first(tmp_path):
    (tmp_path / "modules.dep").write_text(textwrap.dedent("""\
        kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
        kernel/net/9p/9pnet.ko:
        kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
        kernel/fs/netfs/netfs.ko:
        kernel/drivers/crypto/ccp/ccp.ko.xz:
        """))
    (tmp_path / "modules.builtin").write_text("kernel/drivers/virtio/virtio.ko\n")
    order = initramfs.module_order(tmp_path, ["9p", "ccp", "virtio", "9pnet"])
    assert order == ["kernel/fs/netfs/netfs.ko", "kernel/fs/fscache/fscache.ko", "kernel/net/9p/9pnet.ko",
                     "kernel/fs/9p/9p.ko", "kernel/drivers/crypto/ccp/ccp.ko.xz"]
    with pytest.raises(HostError, match="nosuch"):
        initramfs.module_order(tmp_path, ["nosuch"])


@pytest.mark.skipif(not initramfs.BUSYBOX.exists(), reason="needs busybox-static")
def test_linux_guest_initramfs_holds_init_busybox_modules_in_order(tmp_path):
    """Both images come from one builder: init, busybox, the modules and their load order."""
    (tmp_path / "kernel").mkdir()
    (tmp_path / "kernel" / "a.ko").write_bytes(b"\x7fELF-a")
    (tmp_path / "kernel" / "b.ko").write_bytes(b"\x7fELF-b")
    (tmp_path / "modules.dep").write_text("kernel/b.ko: kernel/a.ko\nkernel/a.ko:\n")
    out = initramfs.build_linux_guest(tmp_path, tmp_path / "guest.cpio", modules=["b"])
    e = parse_newc(out.read_bytes())
    assert e["init"][0] == 0o100755 and e["bin/busybox"][1] == initramfs.BUSYBOX.read_bytes()
    assert e["lib/modules/a.ko"][1] == b"\x7fELF-a" and e["etc/modules.order"][1] == b"a.ko\nb.ko\n"
    assert all(e[d][0] == 0o040755 for d in ("proc", "sys", "dev", "tmp", "root"))


def test_stream_strips_the_end_token_across_chunks():
    class Sink:
        data = b""

        def write(self, b):
            self.data += b

        def flush(self):
            pass

    sink, token = Sink(), b"0123456789abcdef"
    s = launcher._Stream(sink, token)
    payload = b"line one\nline two\n" * 50
    stream = payload + token
    for i in range(0, len(stream), 7):            # the token arrives split
        s.feed(stream[i:i + 7])
    assert s.done and sink.data == payload
    s.feed(b"late")                                # nothing after the token is kept
    assert sink.data == payload


def test_stream_without_token_flushes_everything():
    class Sink:
        data = b""

        def write(self, b):
            self.data += b

        def flush(self):
            pass

    sink = Sink()
    s = launcher._Stream(sink, b"T" * 32)
    s.feed(b"partial output")
    s.flush_rest()
    assert sink.data == b"partial output" and not s.done


def test_job_script_quotes_command_cwd_and_environment(tmp_path):
    cwd = tmp_path / "dir with 'quotes' and $dollar"
    cwd.mkdir()
    env = {"FOO": "it's \"quoted\" $HOME `x`", "PATH": os.environ["PATH"], "BASH_FUNC_x%%": "() { :; }",
           "PWD": "/wrong"}
    cmd = ["sh", "-c", 'printf "%s|" "$1" "$FOO" "$PWD" "$VMM_TESTHOST" "$(pwd)"', "arg0", "a b'c\"d"]
    script = tmp_path / "job.sh"
    script.write_text(launcher.job_script(cmd, str(cwd), env))
    out = subprocess.run(["sh", str(script)], stdout=subprocess.PIPE, text=True, check=True).stdout
    assert out.split("|")[:5] == ["a b'c\"d", env["FOO"], str(cwd), "1", str(cwd)]
    assert "BASH_FUNC" not in script.read_text()


def test_job_script_reports_a_missing_cwd(tmp_path):
    script = tmp_path / "job.sh"
    script.write_text(launcher.job_script(["true"], str(tmp_path / "gone"), {}))
    assert subprocess.run(["sh", str(script)], stderr=subprocess.DEVNULL).returncode == 125


def test_parse_memory():
    assert launcher.parse_memory("2G") == "2048M"
    assert launcher.parse_memory("1536m") == "1536M"
    assert launcher.parse_memory("1024") == "1024M"
    for bad in ("100M", "2T", "lots"):
        with pytest.raises(HostError):
            launcher.parse_memory(bad)


def test_kernel_cmdline_has_the_microvm_timer_fixes(tmp_path):
    line = launcher.kernel_cmdline(tmp_path / "job.sh", "cafe")
    assert "tsc=reliable" in line and "console=ttyS0" in line
    assert f"testhost.job={tmp_path}/job.sh" in line and "testhost.token=cafe" in line
    if launcher.host_tsc_khz():
        assert f"tsc_early_khz={launcher.host_tsc_khz()}" in line


def test_qemu_command_is_tcg_one_vcpu_and_passes_fds(tmp_path):
    art = launcher.Artifacts(tmp_path / "vmlinux", tmp_path / "initramfs.cpio")
    cmd = launcher.qemu_command(art, "2048M", "console=ttyS0", tmp_path / "c.log",
                                {"stdout": 5, "stderr": 6, "ctl": 7})
    joined = " ".join(cmd)
    assert "-accel tcg" in joined and "kvm" not in cmd[cmd.index("-accel") + 1]
    assert cmd[cmd.index("-smp") + 1] == "1"
    assert cmd[cmd.index("-cpu") + 1] == "EPYC,+svm,+npt"
    assert "virtio-mmio.force-legacy=false" in cmd
    assert "socket,id=stdout,fd=5" in cmd and "socket,id=ctl,fd=7" in cmd
    assert "/proc/self/fd" not in joined
    assert "readonly=on" in joined


def _fake_kvm_tree(top: Path) -> None:
    top.mkdir()
    (top / "Makefile").write_text(textwrap.dedent("""\
        ccflags-y += -I $(srctree)/arch/x86/kvm
        include $(srctree)/virt/kvm/Makefile.kvm
        kvm-$(CONFIG_KVM_XEN)	+= xen.o
        $(obj)/kvm-asm-offsets.h: $(obj)/kvm-asm-offsets.s FORCE
        """))
    (top / "trace.h").write_text("#undef TRACE_INCLUDE_PATH\n#define TRACE_INCLUDE_PATH ../../arch/x86/kvm\n")


def test_write_kbuild_enables_xen_and_points_paths_at_the_build(tmp_path):
    build = tmp_path / "build"
    _fake_kvm_tree(build)
    modules.write_kbuild(build)
    kbuild = (build / "Kbuild").read_text()
    assert not (build / "Makefile").exists()
    assert "CONFIG_KVM_XEN := y" in kbuild and "-DCONFIG_KVM_XEN=1" in kbuild
    assert "KVM := virt/kvm" in kbuild and "CONFIG_KVM_INTEL :=" in kbuild
    assert "-I $(src)" in kbuild and "include $(src)/virt/kvm/Makefile.kvm" in kbuild
    assert "$(srctree)" not in kbuild
    assert "#define TRACE_INCLUDE_PATH .\n" in (build / "trace.h").read_text()


def test_write_kbuild_refuses_an_unknown_makefile(tmp_path):
    build = tmp_path / "build"
    _fake_kvm_tree(build)
    (build / "Makefile").write_text("obj-m += kvm.o\n")
    with pytest.raises(HostError, match="unexpected shape"):
        modules.write_kbuild(build)


def _fake_bzimage(payload: bytes) -> bytes:
    img = bytearray(0x400)
    img[0x1F1] = 1                                  # setup_sects: payload area starts at 0x400
    img[0x202:0x206] = b"HdrS"
    struct.pack_into("<II", img, 0x248, 0x10, len(payload))
    return bytes(img) + b"\0" * 0x10 + payload + b"trailing"


def _elf_with_note(name: bytes, ntype: int) -> bytes:
    note = struct.pack("<III", len(name) + 1, 4, ntype) + name + b"\0" * (4 - len(name) % 4) + b"\0" * 4
    ehdr = bytearray(64)
    ehdr[:5] = b"\x7fELF\x02"
    struct.pack_into("<Q", ehdr, 0x20, 64)            # e_phoff
    struct.pack_into("<HH", ehdr, 0x36, 56, 1)        # e_phentsize, e_phnum
    phdr = struct.pack("<IIQQQQQQ", 4, 0, 64 + 56, 0, 0, len(note), 0, 4)
    return bytes(ehdr) + phdr + note


def test_extract_vmlinux_from_a_gzip_bzimage():
    elf = _elf_with_note(b"Xen", vmlinux.XEN_ELFNOTE_PHYS32_ENTRY)
    out = vmlinux.extract_vmlinux_bytes(_fake_bzimage(gzip.compress(elf)))
    assert out == elf and vmlinux.has_pvh_note(out)
    assert not vmlinux.has_pvh_note(_elf_with_note(b"Xen", 1))
    assert not vmlinux.has_pvh_note(_elf_with_note(b"GNU", vmlinux.XEN_ELFNOTE_PHYS32_ENTRY))
    with pytest.raises(HostError, match="not a bzImage"):
        vmlinux.extract_vmlinux_bytes(b"\0" * 0x400)


def test_packaged_kernel_has_a_pvh_vmlinux():
    from vmm.testhost import packages
    try:
        info = packages.kernel_info()
    except HostError as e:
        pytest.skip(str(e))
    elf = vmlinux.extract_vmlinux_bytes(info.bzimage.read_bytes())
    assert elf[:4] == b"\x7fELF" and vmlinux.has_pvh_note(elf)


# ------------------------------------------------------------------ the xen_kvm tier
TIER_TEST = """
import pytest

@pytest.mark.xen_kvm
def test_needs_xen():
    pass

def test_plain():
    pass
"""


@pytest.fixture
def tier_run(tmp_path):
    if pytest_tier.host_xen_kvm()[0]:
        pytest.skip("this host's KVM has Xen: the tier runs xen_kvm tests here")
    (tmp_path / "test_tier.py").write_text(TIER_TEST)

    def run(**env_over) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("CI", "VMM_XEN_KVM_TIER", "VMM_TESTHOST")}
        env.update(env_over)
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "vmm.testhost.pytest_tier", "-rs",
                               "-p", "no:cacheprovider", str(tmp_path / "test_tier.py")],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=120)
    return run


def test_tier_skips_with_reason_outside_ci(tier_run):
    p = tier_run()
    assert p.returncode == 0, p.stdout
    assert "1 passed, 1 skipped" in p.stdout
    assert "needs a KVM with Xen" in p.stdout and "make test-nested" in p.stdout


def test_tier_never_skips_in_ci(tier_run):
    p = tier_run(CI="true")
    assert p.returncode == 1, p.stdout
    assert "1 passed, 1 error" in p.stdout
    assert "CI must run it through the nested test host" in p.stdout


def test_tier_fails_inside_a_nested_host_without_xen(tier_run):
    p = tier_run(VMM_TESTHOST="1", VMM_XEN_KVM_TIER="nested")
    assert p.returncode == 1, p.stdout
    assert "1 passed, 1 error" in p.stdout
    assert "are the Xen-enabled kvm modules broken" in p.stdout


def test_tier_deselects_when_make_runs_it_nested(tier_run):
    p = tier_run(CI="true", VMM_XEN_KVM_TIER="nested")
    assert p.returncode == 0, p.stdout
    assert "1 passed, 1 deselected" in p.stdout
    assert "make test-nested" in p.stdout
