# wasinn — the two commands that matter: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED_DATA ?= $(abspath ../shared/data)
BUILD := build/wasm
CLANG ?= clang-14
# A rustup toolchain with a WASI target is preferred when the user has one; otherwise
# Debian's cargo/rustc, which ship the wasm32-wasi std (a rustup toolchain on PATH may not).
CARGO ?= /usr/bin/cargo
RUSTC ?= /usr/bin/rustc
RUSTUP_WASI := $(shell rustup target list --installed 2>/dev/null | grep -xE 'wasm32-wasip1|wasm32-wasi' | head -n1)
ifneq ($(RUSTUP_WASI),)
CARGO_BUILD := cargo
RUST_TARGET := $(RUSTUP_WASI)
else
CARGO_BUILD := RUSTC=$(RUSTC) $(CARGO)
RUST_TARGET := wasm32-wasi
endif
APT_PACKAGES := clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32 rustc cargo libstd-rust-dev-wasm32
BROWSER_PACKAGES := chromium chromium-driver

export WASINN_MODELS ?= $(SHARED_DATA)

# The llama-cpp-python sdist, kept: pip builds the ggml backend from it, and the tests take the
# vocab-only GGUF it vendors to write their tiny llama (wasinn.testing.tiny_gguf). The build
# compiles llama.cpp with cmake and the C++ compiler; pip caches the wheel, so it runs once.
# The build includes llama.cpp's vision library (libmtmd), which the backend's mmproj/image
# prompts use: 5.2 min (309 s) on the 2-core development machine with other jobs running,
# against 3 min for a build without it (-DLLAVA_BUILD=OFF) on the same machine, quiet.
LLAMA_VERSION := 0.3.36
LLAMA_SDIST := build/sdist/llama_cpp_python-$(LLAMA_VERSION).tar.gz
# The wheel built from it is kept outside the checkout, so a fresh clone on the same machine
# (CI, another worktree) installs it in seconds instead of compiling llama.cpp again. The
# directory is named for the vision build: a machine that cached the earlier wheel built
# without libmtmd (wasinn/wheels) builds this one instead of reusing that.
WHEELHOUSE ?= $(HOME)/.cache/wasinn/wheels-mtmd
# The test-model exporter of the OpenVINO GenAI tests (see the setup rule).
OPTIMUM_INTEL := optimum==2.3.0 optimum-intel==2.2.0

C_GUESTS := $(patsubst examples/c/%.c,$(BUILD)/%.wasm,$(wildcard examples/c/*.c)) \
            $(patsubst tests/guests/%.c,$(BUILD)/%.wasm,$(wildcard tests/guests/*.c))
RUST_GUEST_SOURCES := $(shell find guest/rust examples/road-segmentation -name '*.rs' -o -name Cargo.toml)

.PHONY: test-cold all setup toolchain browser examples test lint pytest demo bench bench-llm bench-warm loadtest soak fuzz test-loaded real-guests clean

all: setup examples

# The venv is installed in two steps, each with its stamp: `make demo` installs only what the
# seed example imports (wasinn[demo]: OpenVINO and Pillow), so a fresh machine shows its picture
# without waiting for llama.cpp to compile; `make setup` (and so `make test`) adds the rest to
# the same venv. A stamp older than pyproject.toml installs again.
DEMO_STAMP := $(VENV)/.installed-demo
SETUP_STAMP := $(VENV)/.installed-all

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[demo]'
	touch $@

$(SETUP_STAMP): pyproject.toml | $(BIN)/python
	$(MAKE) --no-print-directory $(LLAMA_SDIST)
	@if ! ls $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1; then \
	  echo "building llama-cpp-python $(LLAMA_VERSION) from source (once per machine; ~5 min on 2 cores)"; \
	  CMAKE_ARGS="$(CMAKE_ARGS)" $(BIN)/pip wheel -q --no-deps -w $(WHEELHOUSE) $(LLAMA_SDIST); \
	fi
	$(BIN)/pip install -q --find-links $(WHEELHOUSE) llama-cpp-python==$(LLAMA_VERSION)
	@# a venv that already holds the same version built without libmtmd keeps it: replace it
	@$(BIN)/python -c "import llama_cpp.mtmd_cpp" 2>/dev/null || \
	  $(BIN)/pip install -q --force-reinstall --no-deps --no-index --find-links $(WHEELHOUSE) \
	    llama-cpp-python==$(LLAMA_VERSION)
	$(BIN)/pip install -q --find-links $(WHEELHOUSE) -e '.[all,dev]'
	@# The tests export their tiny OpenVINO GenAI model with optimum-intel, whose declared
	@# dependencies (torchvision, nncf, scikit-learn) would pull a multi-GB CUDA torch; the
	@# export of a Llama needs none of them, so it goes in without its dependencies.
	$(BIN)/pip install -q --no-deps $(OPTIMUM_INTEL)
	touch $@ $(DEMO_STAMP)

setup: $(SETUP_STAMP)

# Guest toolchains: installed with apt-get when we are root, otherwise explained.
toolchain:
	@if ! command -v $(CLANG) >/dev/null || ! test -e /usr/lib/wasm32-wasi/libc.a \
	    || ! test -x $(CARGO) || ! test -d /usr/lib/rustlib/wasm32-wasi; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing guest toolchains: $(APT_PACKAGES)"; \
	    (apt-get install -y -q --no-install-recommends $(APT_PACKAGES) >/dev/null \
	     || (apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $(APT_PACKAGES) >/dev/null)); \
	  else \
	    echo "missing guest toolchains; run: sudo apt-get install -y --no-install-recommends $(APT_PACKAGES)"; exit 1; \
	  fi; \
	fi

# Headless Chromium and its WebDriver, for the `wasinn serve --demo` page test.
browser:
	@if ! test -x /usr/bin/chromium || ! test -x /usr/bin/chromedriver; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing the test browser: $(BROWSER_PACKAGES)"; \
	    (apt-get install -y -q --no-install-recommends $(BROWSER_PACKAGES) >/dev/null \
	     || (apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $(BROWSER_PACKAGES) >/dev/null)); \
	  else \
	    echo "missing the test browser; run: sudo apt-get install -y --no-install-recommends $(BROWSER_PACKAGES)"; exit 1; \
	  fi; \
	fi

$(BUILD)/%.wasm: examples/c/%.c examples/c/wasi_nn.h | toolchain
	@mkdir -p $(BUILD)
	$(CLANG) --target=wasm32-wasi -O2 -s -Wall -Werror -o $@ $<

$(BUILD)/%.wasm: tests/guests/%.c | toolchain
	@mkdir -p $(BUILD)
	$(CLANG) --target=wasm32-wasi -O2 -s -Wall -Werror -o $@ $<

$(BUILD)/road-segmentation.wasm: $(RUST_GUEST_SOURCES) | toolchain
	@mkdir -p $(BUILD)
	cd examples/road-segmentation && $(CARGO_BUILD) build -q --offline --release \
	  --target $(RUST_TARGET) --target-dir ../../build/cargo
	cp build/cargo/$(RUST_TARGET)/release/road-segmentation.wasm $@

$(LLAMA_SDIST): | $(BIN)/python
	@mkdir -p $(@D)
	$(BIN)/pip download -q --no-deps --no-binary :all: -d $(@D) llama-cpp-python==$(LLAMA_VERSION)

examples: toolchain $(C_GUESTS) $(BUILD)/road-segmentation.wasm

lint: setup
	$(BIN)/ruff check setup.py src tests $(wildcard benchmarks)
	$(BIN)/ruff format --check setup.py src tests $(wildcard benchmarks)
	$(BIN)/mypy

pytest: setup examples browser
	$(BIN)/pytest -q --durations=25

test: lint pytest

demo: $(DEMO_STAMP) examples
	$(BIN)/wasinn demo road-segmentation --out build/demo

bench: setup examples
	$(BIN)/wasinn bench --json build/bench.json

# LLM serving against the anchors (llm-serving spec §8, docs/benchmarks.md): llama-server
# (built once from the sdist's llama.cpp, cached in ~/.cache/wasinn/llama-server; minutes on
# 2 cores), python -m llama_cpp.server and wasinn serve --openai --parallel 8 on a random
# 512-wide 8-block Q8_0 GGUF, concurrency 1, 4, 8. Not part of `make test`.
LLM_JSON ?= benchmarks/results-llm.json
bench-llm: setup examples
	$(BIN)/python -m wasinn.bench.llm --json $(LLM_JSON)

# Whole-process timings of `wasinn run` through the warm host (docs/benchmarks.md, "Warm
# host"): warm vs cold vs a native script on mobilenet-raw, road segmentation and GGML chat.
WARM_RUNS ?= 10
bench-warm: setup examples
	@# bytecode, as `pip install` writes it for an installed wasinn (the editable install's is
	@# written on first import, unless PYTHONDONTWRITEBYTECODE is set: then every start compiles)
	$(BIN)/python -m compileall -q src/wasinn
	$(BIN)/python -m wasinn.bench.warm --runs $(WARM_RUNS)

# The full load test of docs/serving.md (about 8 minutes of both cores): `wasinn serve --demo
# --workers 2` on a loopback port, 2,000 random tensors at concurrency 16, then 200 malformed
# bodies; it stops the server itself and fails when an answer is wrong or the deadline cut it.
LOAD_REQUESTS ?= 2000
LOAD_DEADLINE ?= 1800
LOAD_JSON ?= benchmarks/results-serve-load.json
loadtest: setup examples
	$(BIN)/python -m wasinn.bench.loadtest --demo --total $(LOAD_REQUESTS) --concurrency 16 \
	  --malformed 200 --workers 2 --deadline $(LOAD_DEADLINE) --json $(LOAD_JSON)

# The soak of docs/serving.md (10 minutes of both cores, on loopback): `wasinn serve --demo`
# with the birds model and the tiny GGUF, 32 clients of mixed traffic (road, birds, chat
# streams, embeddings, malformed bodies, clients that leave); it stops the server itself and
# fails on a hang, a wrong answer, a 5xx or an RSS drift of 5 % (tests/test_serve_soak.py: 60 s).
SOAK_SECONDS ?= 600
SOAK_JSON ?= benchmarks/results-serve-soak.json
soak: setup examples
	$(BIN)/python -m wasinn.bench.soak --seconds $(SOAK_SECONDS) --concurrency 32 --json $(SOAK_JSON)

# The HTTP fuzzer of tests/test_serve_fuzz.py with 10,000 examples and a random seed (about
# 3.5 minutes on 2 busy cores; `make test` runs 1,200 fixed ones).
FUZZ_EXAMPLES ?= 10000
fuzz: setup examples
	WASINN_FUZZ_RANDOM=1 WASINN_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q -s tests/test_serve_fuzz.py

# The serve tests on a loaded machine: LOAD_SPINNERS busy-looping processes (bounded by
# `timeout`, killed at the end) keep both cores saturated while they run (docs/serving.md).
LOAD_SPINNERS ?= 3
SERVE_TESTS := tests/test_serve.py tests/test_serve_openai.py tests/test_serve_ray.py \
               tests/test_serve_road.py tests/test_serve_fuzz.py tests/test_serve_soak.py
test-loaded: setup examples
	@spinners=; for i in $$(seq $(LOAD_SPINNERS)); do \
	  timeout 3600 $(BIN)/python -c 'while True: pass' & spinners="$$spinners $$!"; done; \
	trap "kill $$spinners 2>/dev/null" EXIT; $(BIN)/pytest -q $(SERVE_TESTS)

# Every guest binary of second-state/WasmEdge-WASINN-examples (31 prebuilt .wasm files)
# under wasinn run, with models the tests make (tests/test_real_guests.py, about 5 minutes on
# 2 busy cores). The binaries come from a git clone (network; WASINN_EXAMPLES_GIT may name
# an existing clone or bare mirror) and are extracted into build/wasinn-examples, never
# committed. `make test` skips these cases unless WASINN_EXAMPLES_DIR names such a copy.
WASINN_EXAMPLES_URL ?= https://github.com/second-state/WasmEdge-WASINN-examples
WASINN_EXAMPLES_GIT ?= build/wasinn-examples.git
WASINN_EXAMPLES_COPY ?= build/wasinn-examples
real-guests: setup
	@test -d $(WASINN_EXAMPLES_GIT) || git clone --bare --depth 1 $(WASINN_EXAMPLES_URL) $(WASINN_EXAMPLES_GIT)
	@git --git-dir=$(WASINN_EXAMPLES_GIT) ls-tree -r --name-only HEAD | grep '\.wasm$$' | while read -r f; do \
	  mkdir -p "$(WASINN_EXAMPLES_COPY)/$$(dirname "$$f")"; \
	  git --git-dir=$(WASINN_EXAMPLES_GIT) show "HEAD:$$f" > "$(WASINN_EXAMPLES_COPY)/$$f"; done
	WASINN_EXAMPLES_DIR=$(WASINN_EXAMPLES_COPY) $(BIN)/pytest -q -rs tests/test_real_guests.py

# The cold-start test of docs/serving.md at its full 20 starts (`make test` runs 10).
test-cold: setup examples
	WASINN_COLD_STARTS=20 $(BIN)/pytest -q tests/test_serve_cold.py

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
