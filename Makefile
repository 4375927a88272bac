# The two commands of the README: `make up` runs the product, `make test` tests it.
# Each sets up what it needs first (uv, then the locked environment in .venv).
PYTHON ?= python3
UV := $(PYTHON) -m uv

.PHONY: setup up down test quick lint bench

setup:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==0.13.9"
	$(UV) sync --frozen

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
# Two groups side by side (pytest-xdist), each with a platform of its own; a test module
# stays in one group, so its module fixtures are made once.
test: lint
	$(UV) run --frozen pytest -n 2 --dist loadfile --basetemp="$$(mktemp -d)/pytest"

# The inner loop, in a few minutes: the walk from manifest to provenance, storage, the CLI,
# the portal and secrets; no browser, no benchmark, no fault injection.
QUICK ?= tests/test_manifest.py tests/test_jobflow.py tests/test_validation.py \
	tests/test_storage.py tests/test_publish.py tests/test_cli.py tests/test_usage.py \
	tests/test_launch.py tests/test_launch_checks.py tests/test_form.py \
	tests/test_provenance.py tests/test_portal.py tests/test_secrets.py tests/test_platform.py
quick: setup
	$(UV) run --frozen pytest -n 2 --dist loadfile --basetemp="$$(mktemp -d)/pytest" $(QUICK)

# Not part of `make test` (which runs each at tiny sizes): tens of minutes, a 1 GB file,
# 10,000 deployments. Writes benchmarks/RESULTS.md and RESULTS.json.
bench: setup
	$(UV) run --frozen python -m benchmarks
