# Entry points of the portal. `make demo` and `make test` install what they need themselves.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.PHONY: help demo stop status test lint bench clean distclean

PY := .venv/bin/python

help: ## list the targets
	@echo "Targets:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /  make \1\t/' | expand -t 18

demo: ## install, migrate, create the demo data and start the portal in the background
	bash scripts/setup.sh demo
	$(PY) manage.py migrate --noinput
	$(PY) manage.py schedules_ensure
	$(PY) manage.py collectstatic --noinput
	$(PY) manage.py demo_setup
	bash scripts/run-demo.sh start

stop: ## stop the demo started by `make demo`
	bash scripts/run-demo.sh stop

status: ## show whether the demo runs
	bash scripts/run-demo.sh status

test: ## install, start PostgreSQL/Redis/libvirtd and run every test tier
	bash scripts/setup.sh test
	bash scripts/start-services.sh
	bash scripts/run-tests.sh

lint: ## ruff check . and the import contracts (lint-imports)
	.venv/bin/ruff check .
	.venv/bin/lint-imports

bench: ## run every bench/*.py and print its ratios
	@shopt -s nullglob; files=(bench/*.py); \
	if [ $${#files[@]} -eq 0 ]; then echo "no benchmarks in bench/"; exit 0; fi; \
	status=0; for f in "$${files[@]}"; do \
	  case "$$(basename "$$f")" in __init__.py|_*) continue;; esac; \
	  echo "=== $$f"; PYTHONPATH=$(CURDIR) $(PY) "$$f" || status=1; \
	done; exit $$status

clean: ## remove test output, collected static files and caches (keeps the demo data in var/)
	rm -rf artifacts staticfiles var/static .pytest_cache .ruff_cache .import_linter_cache
	find . -path ./.venv -prune -o -path ./node_modules -prune -o \
	  -name __pycache__ -type d -exec rm -rf {} +

distclean: stop clean ## also remove var/ (demo database, images, keys), .venv and node_modules
	rm -rf var .venv node_modules
