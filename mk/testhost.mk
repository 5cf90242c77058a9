# The nested Xen-capable test host (vmm/testhost, docs/testhost.md).  Included by
# the top Makefile, which defines `venv` and PY (the project's .venv python).
#
#   testhost-prepare  apt packages + Xen-enabled kvm.ko/kvm-amd.ko (cached per kernel)
#   linux-guest       the plain Linux guest's busybox initramfs (prints its path)
#   test-nested       the xen_kvm tier: in the nested test host, or on this host
#                     when its own KVM has Xen (set VMM_FORCE_NESTED=1 to nest anyway)

PY ?= .venv/bin/python
TESTHOST := $(PY) -m vmm.testhost
# The whole nested pytest session runs in one outer boot; this bounds it (a frozen outer
# VM must fail CI well inside its 90 minutes; the tier took 44 min in session 5's CI, and
# --durations=25 names what costs).
NESTED_TIMEOUT ?= 3600
NESTED_PYTEST_ARGS ?= -v -p no:cacheprovider -rs --durations=25
# The Linux end-to-end boots (marker linux_e2e: the 7-variant PIRQ matrix, the plain boots,
# the terminal and the panic) are part of the tier; `make test-linux-e2e` runs them alone.
NESTED_MARKS ?= xen_kvm
E2E_TIMEOUT ?= 3600

.PHONY: testhost-prepare linux-guest test-nested test-linux-e2e testhost-status

testhost-prepare: venv
	$(TESTHOST) prepare

linux-guest: venv
	$(TESTHOST) linux-guest

testhost-status: venv
	-$(TESTHOST) status

test-nested: setup testhost-prepare linux-guest
	@if [ -z "$$VMM_FORCE_NESTED" ] && $(PY) -m vmm.testhost.pytest_tier; then \
	    echo "test-nested: this host's KVM has Xen: running the xen_kvm tier here"; \
	    $(PY) -m pytest tests -m "$(NESTED_MARKS)" $(NESTED_PYTEST_ARGS); \
	else \
	    echo "test-nested: running the xen_kvm tier in the nested test host"; \
	    $(TESTHOST) run -v --timeout $(NESTED_TIMEOUT) -- $(PY) -m pytest tests -m "$(NESTED_MARKS)" $(NESTED_PYTEST_ARGS); \
	fi

test-linux-e2e:
	$(MAKE) test-nested NESTED_MARKS="xen_kvm and linux_e2e" NESTED_TIMEOUT=$(E2E_TIMEOUT)
