# Two commands on a fresh machine: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-timeshift bench soak mutants pki clean

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

## make test-timeshift: the unit tests and the end-to-end tests of key banks, certificates and
## firmware with the system clock a year ahead and 30 days back (libfaketime), so no test can
## lean on today's date. Debian's faketime is installed when missing.
TIMESHIFT_TESTS := tests/unit tests/e2e/test_gwa_change.py tests/e2e/test_certificates.py \
                   tests/e2e/test_identity_change.py tests/e2e/test_firmware.py tests/e2e/test_lmn_pairing.py
test-timeshift: $(STAMP)
	@command -v faketime >/dev/null || { echo "installing Debian's faketime"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null; } \
	  || { echo "make test-timeshift needs faketime (apt-get install faketime)" >&2; exit 2; }
	faketime -f '+365d' $(BIN)/pytest -q -m "not slow" -p no:cacheprovider $(TIMESHIFT_TESTS)
	faketime -f '-30d' $(BIN)/pytest -q -m "not slow" -p no:cacheprovider $(TIMESHIFT_TESTS)

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
