# Each target bootstraps its own virtualenv: a fresh machine needs only Python 3.11+.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck bench clean docs-tables

# Test processes (pytest-xdist). More than the cores: much of a test is waiting on a fake server or
# a subprocess. `make test TEST_WORKERS=0` runs in one process.
TEST_WORKERS ?= 6

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed (found %s)" % sys.version.split()[0])'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	@rm -f examples/oomnitza-local.db examples/sync-state.db* examples/locks
	@cd examples && ../$(PY) ../connector.py upload csv_assets csv_users --ini demo.ini
	@echo
	@cd examples && ../$(PY) ../connector.py local summary --ini demo.ini

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# PYTHONDONTWRITEBYTECODE= : keep (and use) compiled bytecode even where the environment turns it off;
# every test worker and every connector subprocess a test starts would otherwise compile the package
# and rewrite the test modules' asserts again (seconds of CPU each). mypy runs while one process
# collects the tests, which writes that bytecode (both use one core) before the workers start.
test: lint
	@$(VENV)/bin/mypy & typecheck=$$!; \
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest --collect-only -q -p no:cacheprovider >/dev/null 2>&1; \
	wait $$typecheck
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

# The settings tables of docs/sources/*.md, generated from the setting declarations.
docs-tables: $(STAMP)
	$(PY) -m oomnitza_connector.docgen

bench: $(STAMP)
	$(PY) benchmarks/run.py

# The documentation site, from docs/ plus the README and CHANGELOG.md (mkdocs.yml), into site/.
# --strict: a page missing from the nav or a link to a missing file or anchor fails the build.
.PHONY: docs
docs: $(STAMP)
	@$(PY) -c 'import mkdocs, material, pymdownx' 2>/dev/null || $(PY) -m pip install --quiet -e '.[docs]'
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache saved_data site examples/oomnitza-local.db examples/sync-state.db* examples/locks
