"""Where the nested test host keeps its files, and its error type."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path


class TesthostError(Exception):
    """A prerequisite is missing or a step failed: one clear message for the user."""


def repo_root() -> Path:
    """The project checkout this package lives in (an editable install)."""
    return Path(__file__).resolve().parents[2]


def guest_images_dir() -> Path:
    return repo_root() / "guest-images"


def cache_root() -> Path:
    """``${VMM_CACHE_DIR:-$HOME/.cache/vmm}``: outside git, kept between runs."""
    env = os.environ.get("VMM_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "vmm"


def testhost_dir(abi: str) -> Path:
    """Per-kernel cache: modules, vmlinux, initramfs for kernel ABI ``abi``."""
    return cache_root() / "testhost" / abi


def linux_guest_dir(abi: str) -> Path:
    """Output of ``make linux-guest`` for kernel ABI ``abi``."""
    return cache_root() / "linux-guest" / abi


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive flock on ``path`` (created), so concurrent prepares don't race."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def file_key(path: Path) -> list:
    """A cheap identity of a file's content for cache stamps: size and mtime."""
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def write_if_changed(out: Path, key: dict, build) -> Path:
    """Rebuild ``out`` with ``build()`` unless its JSON stamp says ``key`` already made it."""
    stamp = out.with_suffix(".json")
    with locked(out.with_suffix(".lock")):
        try:
            if out.exists() and json.loads(stamp.read_text()) == key:
                return out
        except (OSError, ValueError):
            pass
        data = build()
        tmp = out.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(out)
        stamp.write_text(json.dumps(key))
    return out
