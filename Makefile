# The two commands of the README: `make bench` (the main job) and `make test`.
# Both create or refresh .venv and the data first (scripts/setup.sh is idempotent).
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup bench test check clean

setup:
	@bash scripts/setup.sh

bench: setup
	$(BIN)/linbench run

check: setup
	$(BIN)/linbench check

test: setup
	$(BIN)/python -m pytest tests

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
