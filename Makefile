# The two commands of the README: `make up` runs the product, `make test` tests it.
# Each sets up what it needs first (uv, then the locked environment in .venv).
PYTHON ?= python3
UV := $(PYTHON) -m uv

.PHONY: setup up down test test-postgres quick test-quick lint bench

# Byte-compiled once here: a Python that may not write its own cache (PYTHONDONTWRITEBYTECODE,
# or a read-only install) would otherwise compile Prefect from source in every process it
# starts, seconds of CPU each (a Prefect server's start: 17 s of CPU, 10.7 s compiled).
setup:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==0.13.9"
	$(UV) sync --frozen --compile-bytecode
	$(UV) run --frozen --no-sync python -m compileall -q -j 0 accelerator_prefect benchmarks

up: setup
	$(UV) run --frozen acc up

down:
	$(UV) run --frozen acc down

lint: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy

# A temporary folder of its own (outside the checkout, so "outside git" is outside): other
# test sessions on the machine clear only pytest's shared default folders, never this one.
# Two groups side by side (pytest-xdist), each with a platform of its own on SQLite; a test
# module stays in one group, so its module fixtures are made once. The longest modules go
# first (tests/conftest.py, LONGEST_FIRST; `--no-loadscope-reorder` keeps that order), so
# that neither group waits long for the other's last module. Beside them, one after the
# other: the scale set (`-m "scale and not computes"`: launch, access, bursts, faults, the
# portal, several workers; not the tests whose time is a model's own computing) again
# with the Prefect server on PostgreSQL (a server the session starts), then the
# benchmarks' smoke tests (`-m benchmark`, on SQLite, each with platforms of its own);
# their output follows. `make test TEST_GROUPS=3` tries three SQLite groups.
TEST_GROUPS ?= 2
test: lint
	@base="$$(mktemp -d)"; \
	( ACC_TEST_DATABASE=postgresql $(UV) run --frozen pytest -m "scale and not computes" \
		-p no:cacheprovider --basetemp="$$base/postgres" > "$$base/postgres.txt" 2>&1; \
	  on_postgres=$$?; \
	  $(UV) run --frozen pytest -m benchmark -p no:cacheprovider \
		--basetemp="$$base/benchmarks" > "$$base/benchmarks.txt" 2>&1; \
	  test $$on_postgres -eq 0 -a $$? -eq 0 ) & beside=$$!; \
	$(UV) run --frozen pytest -n $(TEST_GROUPS) --dist loadfile --no-loadscope-reorder \
		-m "not benchmark" --basetemp="$$base/sqlite"; sqlite=$$?; \
	wait $$beside; on_beside=$$?; \
	echo "== the scale set on PostgreSQL"; cat "$$base/postgres.txt"; \
	echo "== the benchmarks' smoke tests"; cat "$$base/benchmarks.txt"; \
	test $$sqlite -eq 0 -a $$on_beside -eq 0

# The scale set alone, on PostgreSQL (Debian's postgresql installed; .ci/run does it).
test-postgres: setup
	ACC_TEST_DATABASE=postgresql $(UV) run --frozen pytest -n 2 --dist loadfile \
		--no-loadscope-reorder -m "scale and not computes" --basetemp="$$(mktemp -d)/pytest"

# The inner loop, in a few minutes: the walk from manifest to provenance, storage, the CLI,
# the portal and secrets, on SQLite; no browser, no benchmark, no fault injection.
# `make quick` is the same.
QUICK ?= tests/test_manifest.py tests/test_jobflow.py tests/test_validation.py \
	tests/test_storage.py tests/test_publish.py tests/test_cli.py tests/test_usage.py \
	tests/test_launch.py tests/test_launch_checks.py tests/test_form.py \
	tests/test_provenance.py tests/test_portal.py tests/test_secrets.py tests/test_platform.py
test-quick: setup
	$(UV) run --frozen pytest -n 2 --dist loadfile --no-loadscope-reorder \
		--basetemp="$$(mktemp -d)/pytest" $(QUICK)

quick: test-quick

# Not part of `make test` (which runs each at tiny sizes): tens of minutes, a 1 GB file,
# 10,000 deployments. Writes benchmarks/RESULTS.md and RESULTS.json.
bench: setup
	$(UV) run --frozen python -m benchmarks
