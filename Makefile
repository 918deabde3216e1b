# The two commands of the README: `make demo` and `make test`. Both run setup when needed.
# `make demo` installs and builds only what the demo needs (the CLI); `make test` adds the test
# packages and builds every target.
BUILD ?= build
JOBS  ?= $(shell nproc)
CONFIG ?= configs/run/quickstart.toml

.PHONY: all setup configure build build-cli demo test test-unit bench clean

all: build

$(BUILD)/.setup-demo-ok: scripts/setup.sh scripts/blas_check.cpp
	bash scripts/setup.sh --demo
	@mkdir -p $(BUILD) && touch $@

$(BUILD)/.setup-ok: scripts/setup.sh scripts/blas_check.cpp
	bash scripts/setup.sh
	@mkdir -p $(BUILD) && touch $@ $(BUILD)/.setup-demo-ok

setup: $(BUILD)/.setup-ok

# Ninja where it is installed (setup installs it): re-running CMake after a source file is added then
# recompiles that file only, where the Makefile generator rebuilds everything. A build folder that is
# already configured keeps its generator.
GENERATOR = $(shell [ ! -f $(BUILD)/CMakeCache.txt ] && command -v ninja >/dev/null && echo "-G Ninja")

# Configured again after the full setup, so that the test framework installed by it is found.
$(BUILD)/.configured-demo: $(BUILD)/.setup-demo-ok CMakeLists.txt
	cmake -S . -B $(BUILD) $(GENERATOR) -DCMAKE_BUILD_TYPE=Release
	@touch $@

$(BUILD)/.configured: $(BUILD)/.setup-ok CMakeLists.txt
	cmake -S . -B $(BUILD) $(GENERATOR) -DCMAKE_BUILD_TYPE=Release
	@touch $@ $(BUILD)/.configured-demo

configure: $(BUILD)/.configured

build-cli: $(BUILD)/.configured-demo
	cmake --build $(BUILD) -j $(JOBS) --target dsforge

build: $(BUILD)/.configured
	cmake --build $(BUILD) -j $(JOBS)

demo: build-cli
	$(BUILD)/dsforge pipeline --config $(CONFIG)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The fast subset: `ctest -L unit` (labels: unit, data, e2e, dist).
test-unit: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -L unit

bench: build
	@for b in $(BUILD)/bench_*; do [ -x "$$b" ] && "$$b"; done

clean:
	rm -rf $(BUILD)
