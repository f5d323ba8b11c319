# Two commands on a fresh machine: `make demo` (install, train on the shipped data, sample)
# and `make test` (install the test extras, lint, run the tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two stamps in the one venv, named after pyproject.toml's checksum so that a changed
# pyproject.toml reinstalls: runtime (what running charlm needs, with numba for the compiled CPU
# kernels: `make demo`) and test (the test extras, numba among them, on top: everything else).
# The test install satisfies runtime too.
CKSUM := $(shell cksum < pyproject.toml | cut -d' ' -f1)
RUNTIME_STAMP := $(VENV)/.installed-runtime-$(CKSUM)
TEST_STAMP := $(VENV)/.installed-test-$(CKSUM)

.PHONY: install test lint chromium demo bench clean

$(RUNTIME_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[fast]'
	rm -f $(filter-out $(TEST_STAMP),$(wildcard $(VENV)/.installed-*)) && touch $@

$(TEST_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned (CPU wheel on disk) and only needed for the tests' cross-checks.
	$(BIN)/pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@ $(RUNTIME_STAMP)

install: $(TEST_STAMP)

lint: $(TEST_STAMP)
	$(BIN)/ruff check charlm tests benchmarks
	$(BIN)/ruff format --check charlm tests benchmarks

# `charlm viz`'s page test renders in headless Chromium: install Debian's package when this runs
# as root or with passwordless sudo and has apt-get; without it the test says it is skipped.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	  else sudo=no; fi; \
	  if [ "$$sudo" != no ] && command -v apt-get >/dev/null 2>&1; then \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 \
	    || { $$sudo apt-get update -qq >/dev/null 2>&1 && $$sudo env \
	         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; } \
	    || echo "could not install chromium: the viz page test will be skipped"; \
	  else echo "chromium is not installed (needs root and apt-get): the viz page test will be skipped"; \
	  fi; }

test: $(TEST_STAMP) lint chromium
	$(BIN)/python -m pytest -q

demo: $(RUNTIME_STAMP)
	mkdir -p runs
	$(BIN)/charlm vocab build data/tinyshakespeare.txt -o runs/vocab-demo.json
	# the Shakespeare config shrunk to learn what it can in one minute
	$(BIN)/charlm train data/tinyshakespeare.txt --config configs/shakespeare-lstm.yaml \
		--set model.hidden_size=256 --set model.dropout=0 --set train.batch_size=16 --set train.lr=3e-3 \
		--set train.lr_schedule=constant --set train.max_steps=0 --set train.max_seconds=60 \
		--set train.eval_every=300 --set train.sample_every=0 --run-dir runs/demo --overwrite
	$(BIN)/charlm sample --run runs/demo --max-len 300 --seed 1 --temperature 0.8

# Each benchmark exits 1 on a missed target: run them all, then fail if any did.
bench: $(TEST_STAMP)
	status=0; \
	for b in data_speed train_speed sample_speed; do \
		$(BIN)/python benchmarks/$$b.py || status=1; \
	done; \
	exit $$status

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
