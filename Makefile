# Two commands on a fresh machine: `make demo` (install, train on the shipped data, sample)
# and `make test` (install the test extras, lint, run the tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install test lint demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned (CPU wheel on disk) and only needed for the tests' cross-checks.
	$(BIN)/pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check charlm tests benchmarks
	$(BIN)/ruff format --check charlm tests benchmarks

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	mkdir -p runs
	$(BIN)/charlm vocab build data/tinyshakespeare.txt -o runs/vocab-demo.json
	# the Shakespeare config shrunk to learn what it can in one minute
	$(BIN)/charlm train data/tinyshakespeare.txt --config configs/shakespeare-lstm.yaml \
		--set model.hidden_size=256 --set model.dropout=0 --set train.batch_size=16 \
		--set train.lr_schedule=constant --set train.max_steps=0 --set train.max_seconds=60 \
		--set train.eval_every=300 --set train.sample_every=0 --run-dir runs/demo --overwrite
	$(BIN)/charlm sample --run runs/demo --max-len 300 --seed 1 --temperature 0.8

bench: $(STAMP)
	$(BIN)/python benchmarks/data_speed.py
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/sample_speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
