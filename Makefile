# dpustack developer entry points.  See docs/testing.md.
#
#   make test     install system packages (as root) + venv, run the whole suite
#   make demo     the OVN lab demo (`dpustack demo --dataplane ovn`; root, installs system packages)
#   make sysdeps  install the Debian packages the test suite needs (root only)
#   make venv     create .venv and install the project with its test extras
#   make clean    remove build/test caches (distclean also removes .venv)

# Debian packages the test suite needs (libvirt-dev, pkg-config and gcc build
# libvirt-python; qemu-utils gives the controller qemu-img; qemu-system-common gives the DPU its
# qemu-storage-daemon; qemu-system-x86 and busybox-static boot the lab's guests; libvirt-daemon and
# libvirt-daemon-driver-qemu run the lab hosts' private libvirtds; syslinux, mtools and dosfstools make
# the lab host image (a bootable FAT disk); libvirt-clients' virt-xml-validate (with libxml2-utils' xmllint)
# checks libvirt XML against libvirt's schema; the rest run in the integration tests).
SYSDEPS := postgresql iproute2 procps openvswitch-switch ovn-central ovn-host ipmitool ethtool iputils-ping isc-dhcp-client libvirt-dev pkg-config gcc qemu-utils qemu-system-common qemu-system-x86 busybox-static libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libxml2-utils syslinux mtools dosfstools

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
PYTEST_ARGS ?=
TEST_DIRS := $(wildcard tests/unit tests/integration tests/e2e)

# On Debian, `python3 -m venv` needs python3-venv (ensurepip).  Only asked
# for when the venv actually has to be created and ensurepip is missing.
VENV_SYSDEPS := python3-venv

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
# apt/dpkg and pip must not run concurrently under `make -j`.
.NOTPARALLEL:
.PHONY: venv sysdeps test demo clean distclean

# $(call ensure_debs,<packages>): install the missing ones (root) or fail with a list.
define ensure_debs
missing=""; \
for p in $(1); do \
  case "$$(dpkg -s "$$p" 2>/dev/null || true)" in \
    *"Status: install ok installed"*) ;; \
    *) missing="$$missing $$p" ;; \
  esac; \
done; \
if [ -n "$$missing" ]; then \
  if [ "$$(id -u)" -eq 0 ]; then \
    echo "sysdeps: installing$$missing"; \
    export DEBIAN_FRONTEND=noninteractive; \
    apt-get update; \
    apt-get install -y --no-install-recommends $$missing; \
  else \
    echo "sysdeps: missing Debian packages:$$missing" >&2; \
    echo "sysdeps: run 'sudo make sysdeps' (or apt-get install$$missing)" >&2; \
    exit 1; \
  fi; \
fi
endef

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@if [ ! -x $(VPY) ]; then \
	  if ! $(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1; then \
	    $(call ensure_debs,$(VENV_SYSDEPS)); \
	  fi; \
	  echo "venv: creating $(VENV) with $(PYTHON)"; \
	  $(PYTHON) -m venv $(VENV); \
	fi
	$(VPY) -m pip install -e '.[test]'
	@touch $@

sysdeps:
	@$(call ensure_debs,$(SYSDEPS))

# pytest exit status 5 = "no tests collected" (e.g. all test dirs still empty):
# reported loudly but not treated as a failure.
test: sysdeps venv
	@rc=0; \
	$(VPY) -m pytest -p no:cacheprovider -rs -q $(or $(TEST_DIRS),tests) $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "WARNING: no tests were collected" >&2; rc=0; fi; \
	exit $$rc

demo: sysdeps venv
	$(VENV)/bin/dpustack demo --dataplane ovn

clean:
	rm -rf build dist .pytest_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
