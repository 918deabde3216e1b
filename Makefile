# The two commands of the README: `make demo` and `make test`. Both run setup when needed.
BUILD ?= build
JOBS  ?= $(shell nproc)
CONFIG ?= configs/run/quickstart.toml

.PHONY: all setup configure build demo test bench clean

all: build

$(BUILD)/.setup-ok: scripts/setup.sh scripts/blas_check.cpp
	bash scripts/setup.sh
	@touch $@

setup:
	bash scripts/setup.sh
	@mkdir -p $(BUILD) && touch $(BUILD)/.setup-ok

$(BUILD)/CMakeCache.txt: $(BUILD)/.setup-ok CMakeLists.txt
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release

configure: $(BUILD)/CMakeCache.txt

build: configure
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	$(BUILD)/dsforge pipeline --config $(CONFIG)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

bench: build
	@for b in $(BUILD)/bench_*; do [ -x "$$b" ] && "$$b"; done

clean:
	rm -rf $(BUILD)
