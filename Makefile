# Two commands on a fresh machine: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench soak mutants pki clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

var/pki/pki.json: | $(STAMP)
	$(BIN)/smgw-emu pki init var/pki

pki: var/pki/pki.json

## make run: set up, create the development PKI when absent, start one gateway on the embedded defaults
run: $(STAMP) var/pki/pki.json
	$(BIN)/smgw-emu run

## make test: set up and run the whole suite
test: $(STAMP)
	$(BIN)/pytest -q -m "not slow"

## make bench: benchmarks (figures, not assertions)
bench: $(STAMP)
	$(BIN)/python bench/run_all.py

## make soak: long crash-safety campaign
soak: $(STAMP)
	$(BIN)/python bench/crash_campaign.py 500

## make mutants: plant known faults (bench/mutants.py) and check the tests catch each one
mutants: $(STAMP)
	$(BIN)/python bench/mutants.py

clean:
	rm -rf $(VENV) var .pytest_cache
