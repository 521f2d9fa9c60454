# Quick start: `make demo` runs a real two-platform build through Drydock on this machine;
# `make test` runs every test. Both install what they need first (scripts/setup.sh, as root).

CARGO ?= cargo

.PHONY: setup build demo test lint

setup:
	scripts/setup.sh

build:
	$(CARGO) build --workspace --bins

demo: setup build
	scripts/demo.sh

# The end-to-end tests start real servers, BuildKit daemons and registries; two at a time
# keeps a 2-core machine from timing out BuildKit's QEMU-emulated arm64 steps.
test: setup build
	$(CARGO) test --workspace --no-fail-fast -- --test-threads=2

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
