# Cairn: entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

BOARD    ?= qemu-aarch64
RECIPE   ?= default
API_PORT ?= 6443
# Version the image reports; defaults to the workspace version.
VERSION  ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
export CAIRN_VERSION := $(VERSION)
export SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 1735689600)
# A CI run starts from a fresh clone: incremental artefacts would only cost disk (gigabytes).
ifdef CI
export CARGO_INCREMENTAL := 0
endif

# Host tools and tests use the machine's cargo; device binaries are cross-built with
# Debian's rustc 1.85 (see docs/toolchain.md). `make build CARGO=cross` uses cross-rs
# (needs Docker or Podman) instead.
HOST_CARGO ?= cargo
CARGO      ?= /usr/bin/cargo
DEVICE_RUSTC ?= /usr/bin/rustc
DEVICE_TARGET_DIR := $(CURDIR)/target/device

ARCHES ?= x86_64 aarch64 armv7 s390x
triple_x86_64  := x86_64-unknown-linux-gnu
triple_aarch64 := aarch64-unknown-linux-gnu
triple_armv7   := armv7-unknown-linux-gnueabihf
triple_s390x   := s390x-unknown-linux-gnu

board_arch = $(shell sed -n 's/^arch: *//p' board-configs/$(1).yaml 2>/dev/null)
QEMU_BOARDS := qemu-x86_64 qemu-aarch64 qemu-armv7 qemu-s390x
# Boards booted by `make test` besides QEMU_BOARDS (network boot).
NETBOOT_BOARDS := pxe-x86_64 pxe-aarch64
# Raspberry Pi SD cards, booted in QEMU's raspi machines by `make test`.
RPI_BOARDS := rpi3 rpi4 rpi2 rpi3-armv7
CAIRNCTL := $(CURDIR)/target/debug/cairnctl

ifeq ($(notdir $(CARGO)),cross)
export CAIRN_K8S_PROTOSET_DIR ?= /usr/local/share/cairn
device_build = cross build --release --target $(triple_$(1)) -p cairn-init -p cairn --target-dir $(DEVICE_TARGET_DIR)
else
# Without SOURCE_DATE_EPOCH (the images' timestamps, not the binaries'): cc-rs reruns every C
# build script when it changes, so each commit would rebuild ring, zstd and SQLite and
# relink every target from scratch.
device_build_targets = env -u SOURCE_DATE_EPOCH RUSTC=$(DEVICE_RUSTC) CARGO_TARGET_DIR=$(DEVICE_TARGET_DIR) \
	CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
	$(CARGO) build --release $(foreach a,$(1),--target $(triple_$(a))) -p cairn \
	&& $(call init_build,$(1))
device_build = $(call device_build_targets,$(1))
endif

# cairn-init is linked against musl rather than glibc: static glibc alone was ~825 KB of its
# 1.4 MB (docs/decisions.md). Debian ships no Rust std for musl targets, so std is built from
# rust-web-src (-Zbuild-std), and Debian's musl-dev gives libc.a, the start files and a gcc
# wrapper per architecture. Rust's unwind crate links `-lunwind` for static musl: that is
# GCC's libgcc_eh from the cross compiler, under the name Rust asks for. The binary is then
# put next to `cairn` in target/device/<gnu triple>/release, where cairnctl takes both.
# The musl names follow from the gnu ones: x86_64-unknown-linux-gnu -> -musl,
# armv7-unknown-linux-gnueabihf -> -musleabihf; aarch64-linux-gnu-gcc -> aarch64-linux-musl-gcc.
musl = $(subst -gnu,-musl,$(1))
gnu_gcc_x86_64  := x86_64-linux-gnu-gcc
gnu_gcc_aarch64 := aarch64-linux-gnu-gcc
gnu_gcc_armv7   := arm-linux-gnueabihf-gcc
gnu_gcc_s390x   := s390x-linux-gnu-gcc
UNWIND_DIR := $(DEVICE_TARGET_DIR)/unwind
upper = $(shell echo '$(1)' | tr 'a-z-' 'A-Z_')
musl_env = CARGO_TARGET_$(call upper,$(call musl,$(triple_$(1))))_LINKER=$(call musl,$(gnu_gcc_$(1))) \
	CARGO_TARGET_$(call upper,$(call musl,$(triple_$(1))))_RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static -C link-self-contained=no -L $(UNWIND_DIR)/$(1)"
init_build = for a in $(1); do mkdir -p $(UNWIND_DIR)/$$a; done \
	$(foreach a,$(1),&& ln -sf "$$($(gnu_gcc_$(a)) -print-file-name=libgcc_eh.a)" $(UNWIND_DIR)/$(a)/libunwind.a) \
	&& env -u SOURCE_DATE_EPOCH RUSTC=$(DEVICE_RUSTC) RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$(DEVICE_TARGET_DIR) \
	$(foreach a,$(1),$(call musl_env,$(a))) \
	$(CARGO) build --release $(foreach a,$(1),--target $(call musl,$(triple_$(a)))) -p cairn-init \
	-Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size \
	$(foreach a,$(1),&& install -D -m 0755 $(DEVICE_TARGET_DIR)/$(call musl,$(triple_$(a)))/release/cairn-init $(DEVICE_TARGET_DIR)/$(triple_$(a))/release/cairn-init)

.PHONY: help deps build build-% cairnctl image bundle upgrade images images-built qemu test unit-test boot-test bench clean

help:
	@echo "Cairn make targets:"
	@echo "  make deps                    install every tool and package (Debian 12, needs root/sudo)"
	@echo "  make build [ARCHES='x86_64 aarch64 armv7 s390x'] [CARGO=cross]"
	@echo "                               cross-build static cairn-init and cairn"
	@echo "  make image BOARD=B [RECIPE=R] [VERSION=V]"
	@echo "                               build out/B/disk.img{,.zst,.bmap} and manifest.json"
	@echo "  make bundle BOARD=B VERSION=V [BREAK_HEALTH=1]"
	@echo "                               signed A/B update bundle -> out/B/update.cairnb"
	@echo "  make upgrade BOARD=B         send out/B/update.cairnb to the node make qemu runs"
	@echo "  make qemu BOARD=B [API_PORT=6443]"
	@echo "                               boot out/B/disk.img headless (console: out/B/console.log)"
	@echo "  make test                    unit tests; build and boot all four qemu-* boards and pxe-x86_64, pxe-aarch64 (network boot) and rpi3, rpi4, rpi2, rpi3-armv7 (SD cards in raspi3b/4b/2b); a two-node cluster (x86_64); A/B updates with power cuts (x86_64, aarch64, rpi4)"
	@echo "  make bench                   sizes and boot timings per architecture; pods: memory, start latency; updater time, writes, RSS"
	@echo "Boards: $$(ls board-configs | sed 's/\.yaml$$//' | tr '\n' ' ')"

deps:
	bash ci/install-deps.sh

# One cargo for every architecture (not one per architecture): its job queue keeps both
# cores busy while each target's single-threaded LTO link runs (docs/decisions.md).
ifeq ($(notdir $(CARGO)),cross)
build: $(addprefix build-,$(ARCHES))
else
build:
	@echo "==> $$(date -u +%T) cross-building cairn for $(foreach a,$(ARCHES),$(triple_$(a))), cairn-init for $(foreach a,$(ARCHES),$(call musl,$(triple_$(a))))"
	$(call device_build_targets,$(ARCHES))
endif

build-%:
	@echo "==> cross-building cairn-init and cairn for $(triple_$*)"
	$(call device_build,$*)

cairnctl:
	$(HOST_CARGO) build -q -p cairnctl

image: cairnctl
	@test -f board-configs/$(BOARD).yaml || { $(CAIRNCTL) build --board $(BOARD); exit 1; }
	$(if $(BUILT),,$(MAKE) --no-print-directory build-$(call board_arch,$(BOARD)))
	$(CAIRNCTL) build --board $(BOARD) --recipe $(RECIPE) --image-version $(VERSION)

# A signed update bundle at VERSION: the image is built in out/$(BOARD)/v$(VERSION), the
# bundle written to out/$(BOARD)/update.cairnb. BREAK_HEALTH=1 makes one whose node fails
# its health gate on purpose (rollback tests).
bundle: cairnctl
	$(MAKE) --no-print-directory build-$(call board_arch,$(BOARD))
	$(CAIRNCTL) build --board $(BOARD) --recipe $(RECIPE) --image-version $(VERSION) --out out/$(BOARD)/v$(VERSION) --no-disk-archive
	$(CAIRNCTL) bundle --board $(BOARD) --image-dir out/$(BOARD)/v$(VERSION) --out out/$(BOARD)/update.cairnb $(if $(BREAK_HEALTH),--break-health)

# `make build` has just built every architecture: the boards take those binaries as they
# are (BUILT=1). A one-target cargo run after the four-target one would rebuild s390x's
# `cairn` (features of target-specific dependencies are unified across the targets of one
# cargo run, so the fingerprints differ), almost 4 minutes for the same program.
images: build
	@$(MAKE) --no-print-directory images-built

# Every board's image from the device binaries `make build` left.
images-built: cairnctl
	@echo "==> $$(date -u +%T) images"
	@for b in $(QEMU_BOARDS) $(NETBOOT_BOARDS) $(RPI_BOARDS); do $(MAKE) --no-print-directory image BOARD=$$b BUILT=1 || exit 1; done

# Sends out/$(BOARD)/update.cairnb to the node `make qemu` runs, and follows it to the end.
upgrade: cairnctl
	$(CAIRNCTL) upgrade --kubeconfig out/$(BOARD)/kubeconfig out/$(BOARD)/update.cairnb

# Builds the image first when there is none.
qemu: cairnctl
	@test -f out/$(BOARD)/manifest.json || $(MAKE) --no-print-directory image BOARD=$(BOARD)
	$(CAIRNCTL) qemu --board $(BOARD) --api-port $(API_PORT)

# The kubelet tests run pods of the test images (out/test-images, built by cairnctl).
unit-test: cairnctl
	@echo "==> $$(date -u +%T) unit and host tests"
	$(CAIRNCTL) test-images -o out/test-images
	CAIRN_TEST_IMAGES=$(CURDIR)/out/test-images $(HOST_CARGO) test --workspace --exclude cairnctl
	$(HOST_CARGO) test -p cairnctl --lib --bins --test config --test upgrade --test testimages

boot-test: cairnctl
	@echo "==> $$(date -u +%T) QEMU boots, cluster, updates"
	$(HOST_CARGO) test -p cairnctl --test reproducible --test flash --test boot --test netboot --test raspi --test cluster --test update -- --test-threads=2

# The device build (CPU-bound, the longest step) runs niced in the background while the
# unit tests build and run: many of those tests wait on controllers and timers, and the
# device build takes the cores they leave idle (docs/benchmarks.md, CI time). Its output goes
# to out/device-build.log and is shown from where it is once the unit tests are done. It
# runs in its own process group (set -m), so a failing unit test stops all of it.
test:
	@mkdir -p out; set -m; \
	echo "==> $$(date -u +%T) cross-building the device binaries in the background while the unit tests run (log: out/device-build.log)"; \
	nice -n 10 $(MAKE) --no-print-directory build > out/device-build.log 2>&1 & build=$$!; set +m; \
	trap 'kill -- -$$build 2>/dev/null' EXIT; \
	$(MAKE) --no-print-directory unit-test || exit 1; \
	echo "==> $$(date -u +%T) the device build, so far and until it ends:"; \
	tail -n +1 --pid=$$build -f out/device-build.log; \
	wait $$build || { echo "make test: the device build failed (out/device-build.log)" >&2; exit 1; }; \
	trap - EXIT; \
	$(MAKE) --no-print-directory images-built boot-test
	@echo "==> $$(date -u +%T) make test passed"

# Pods: x86_64 and aarch64 (armv7 and s390x under TCG take long; `cairnctl bench-pods
# qemu-armv7` measures them). The agent and the 256 MiB node need root for the host bridge.
bench: images
	$(CAIRNCTL) bench $(QEMU_BOARDS)
	$(CAIRNCTL) bench-pods $(if $(filter 0,$(shell id -u)),--agent) qemu-x86_64 qemu-aarch64
	$(CAIRNCTL) bench-update qemu-x86_64 qemu-aarch64 rpi4
	$(HOST_CARGO) bench -q -p cairn --features test-fixtures --bench update
	$(HOST_CARGO) bench -q -p cairn --bench api
	$(HOST_CARGO) bench -q -p cairn-controllers --bench controllers

clean:
	rm -rf out target
