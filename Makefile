# fastpath: every target installs what it needs and is safe to run twice.
#   make demo    the demo cluster on its defaults (fastpath up, then fastpath check)
#   make test    the whole suite (as root: the integration tests use real netns, BPF, cgroups)
#   make bench   every benchmark, JSON and PNG under out/
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fastpath-installed
BPF_SRC := $(wildcard bpf/*.bpf.c)
# sk_msg comes in three builds, one per way of reading the peer's queue (bpf/sk_msg.bpf.c
# says which kernels take which); the loader picks one at run time.
BPF_OBJ := $(patsubst bpf/%.bpf.c,build/bpf/%.bpf.o,$(BPF_SRC)) \
           build/bpf/sk_msg_walk.bpf.o build/bpf/sk_msg_nobound.bpf.o
BPF_CFLAGS := -O2 -g -Wall -Werror -target bpf -D__TARGET_ARCH_x86 -Ibuild/bpf -Ibpf
BENCHES ?= podnet cni bgp cluster accel proxy shm rcu

.PHONY: setup system guest-kernels venv bpf demo test unit bench lint clean

setup: system venv bpf

system:
	@if [ "$$(id -u)" -eq 0 ]; then bash scripts/install-system-packages.sh; \
	else echo "make: not root, skipping scripts/install-system-packages.sh"; fi

# Debian's 6.1 and 6.12 kernels, booted in qemu guests by the conformance suite
guest-kernels:
	@if [ "$$(id -u)" -eq 0 ]; then bash scripts/install-guest-kernels.sh; \
	else echo "make: not root, skipping scripts/install-guest-kernels.sh"; fi

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py $(wildcard src/fastpath/*.c src/fastpath/*.h src/fastpath/*/*.c)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	@touch $@

# BPF objects are compiled against this kernel's BTF (vmlinux.h from /sys/kernel/btf/vmlinux).
bpf: $(BPF_OBJ)

build/bpf/vmlinux.h:
	@mkdir -p build/bpf
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

build/bpf/%.bpf.o: bpf/%.bpf.c $(wildcard bpf/*.h) build/bpf/vmlinux.h
	clang $(BPF_CFLAGS) -c $< -o $@

build/bpf/sk_msg_walk.bpf.o: bpf/sk_msg.bpf.c $(wildcard bpf/*.h) build/bpf/vmlinux.h
	clang $(BPF_CFLAGS) -DFP_PEER_QUEUE=2 -c $< -o $@

build/bpf/sk_msg_nobound.bpf.o: bpf/sk_msg.bpf.c $(wildcard bpf/*.h) build/bpf/vmlinux.h
	clang $(BPF_CFLAGS) -DFP_PEER_QUEUE=3 -c $< -o $@

demo: setup
	$(BIN)/fastpath up
	$(BIN)/fastpath check

test: setup guest-kernels
	$(BIN)/python -m pytest -q

unit: venv
	$(BIN)/python -m pytest -q -m 'not root'

bench: setup
	@mkdir -p out
	@for b in $(BENCHES); do \
	  $(BIN)/fastpath bench $$b --json out/bench-$$b.json --plot out/bench-$$b.png || exit 1; \
	done

# ruff (pyflakes, pycodestyle, import order, bugbear, imports at the top), mypy, and the
# import graph against the designed arrows (tests/test_architecture.py)
lint: venv
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_architecture.py

clean:
	rm -rf build $(VENV) out
