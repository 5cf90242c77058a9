# Front door.  `make setup` prepares everything; `make test` runs every tier.
#
#   setup         apt packages, .venv with the package (cffi extension built), guest images
#   test          host tier on /dev/kvm, then the Xen tier (on the host if its KVM has Xen,
#                 otherwise inside the nested test host)
#   test-host     host tier only
#   guest-images  build the kit guests (guest-images/build/*.elf)
#   bench         benchmarks (bench/), printing ratios against in-run baselines
#   bench-linux   Linux boot and virtio-blk, ours vs QEMU, in the nested test host (slow, not in bench)
#   soak          10 minutes of seeded hypercall fuzzing on 2 vCPUs with a PIRQ storm (bench/fuzz_soak.py), not in CI

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST := $(PY) -m pytest

# What the host tier needs: a compiler and binutils for the guests and the cffi
# extension, the KVM uapi headers, a Debian kernel for the bzImage loader tests,
# acpica-tools (iasl, acpiexec: tests/test_acpi.py decodes and runs our AML; skipped without),
# iproute2 (taps and network namespaces of the virtio-net tests) and util-linux (setpriv).
APT_PACKAGES := gcc make binutils libc6-dev linux-libc-dev libffi-dev linux-image-amd64 acpica-tools iproute2 util-linux

.PHONY: setup apt venv pyc guest-images test test-host bench bench-linux soak clean
.DEFAULT_GOAL := setup

setup: apt venv pyc guest-images

apt:
	sh scripts/ensure-apt.sh $(APT_PACKAGES)

venv: $(VENV)/.installed

# editable_mode=compat: a .pth line with this checkout's path.  setuptools' default editable
# install is an import hook whose module site imports at every interpreter start (pathlib,
# importlib.util, ...): 10 ms of a 20 ms `python -c pass` here, ~25x that in the nested test host.
$(VENV)/.installed: pyproject.toml setup.py kvm_bindings/_build.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	$(PY) -c 'import kvm_bindings'
	touch $@

# Bytecode for our packages, written here because Python may be told not to write it
# (PYTHONDONTWRITEBYTECODE, as in CI): every `vmm` start then compiled ~90 modules from
# source, 0.24 s here and ~7 s in the nested test host, which reads these files through 9p.
pyc: venv
	$(PY) -m compileall -q -j 0 kvm_bindings vmm devices xen tests bench

guest-images:
	$(MAKE) -C guest-images all check

test-host: setup
	$(PYTEST) tests -m 'not xen_kvm' -v -p no:cacheprovider

test: test-host test-nested

bench: setup
	$(PY) bench/pio_exit.py
	$(PY) bench/serial_console.py
	$(PY) bench/hypercall.py
	$(PY) bench/pirq.py
	$(PY) bench/xen_services.py
	$(PY) bench/startup.py

# bench/linux_boot.py: --prepare fills the cache on this host (QEMU >= 8 for the Xen pair,
# the linux-guest initramfs); the nested test host, read-only, then only reads it.
# E.g. BENCH_LINUX_ARGS="--reps 5 --console quiet".
BENCH_LINUX_ARGS ?=
BENCH_LINUX_TIMEOUT ?= 5400
bench-linux: setup testhost-prepare
	$(PY) bench/linux_boot.py --prepare
	$(PY) -m vmm.testhost run --timeout $(BENCH_LINUX_TIMEOUT) -- $(PY) bench/linux_boot.py $(BENCH_LINUX_ARGS)

SOAK_MINUTES ?= 10
soak: setup
	$(PY) bench/fuzz_soak.py --minutes $(SOAK_MINUTES) --cpus 2 --storm

clean:
	$(MAKE) -C guest-images clean
	rm -rf $(VENV) kvm_bindings/_kvm.* *.egg-info

-include mk/testhost.mk

# Until the nested test host lands, test-nested says so instead of passing silently.
ifeq ($(wildcard mk/testhost.mk),)
test-nested:
	@echo "test-nested: the nested test host (mk/testhost.mk) is not part of this checkout" >&2; exit 1
endif
