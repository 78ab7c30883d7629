# The two Quickstart commands: `make demo` and `make test`. Both install what they need first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test sandbox-image browser lint bench compose-nats compose-worker compose-up \
	compose-down

$(BIN)/heterarch: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(BIN)/heterarch

install: $(BIN)/heterarch

demo: install sandbox-image
	$(BIN)/heterarch demo

# The sandbox image is built locally; machines that cannot pull images build it from a Debian
# root fs made with mmdebstrap (installed here from the machine's own apt sources if missing).
# The compose tests build a NATS image with a static busybox (health check) from Debian too.
sandbox-image: install
	@if ! command -v mmdebstrap >/dev/null || ! test -x /bin/busybox; then \
		(apt-get update -qq && apt-get install -y -qq mmdebstrap busybox-static) >/dev/null; fi
	$(BIN)/heterarch sandbox build --if-missing

# The viewer's tests load its page in a real headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) \
		>/dev/null || echo "chromium not installed: the browser tests of heterarch view skip"

test: install sandbox-image browser
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check heterarch actors runtime transports sandbox examples tests bench
	$(BIN)/mypy

bench: install sandbox-image
	$(BIN)/python bench/ask_rtt.py
	$(BIN)/python bench/spawn.py
	$(BIN)/python bench/sandbox.py
	$(BIN)/python bench/fanout.py
	$(BIN)/python bench/rlm_vs_reference.py
	$(BIN)/python bench/hetero.py
	$(BIN)/python bench/vision.py
	$(BIN)/python bench/tracing.py

# The local stack (compose/), with `docker compose` or `docker-compose`, whichever exists:
# every image is built here when it cannot be pulled; Jaeger (a registry image, not buildable
# here) is left out with a one-line notice when no registry answers. Project name: heterarch
# (COMPOSE_PROJECT_NAME=... for a second stack on the same engine). WORKERS=1 adds the workers.
compose-nats: install
	$(BIN)/python compose/build_images.py nats

compose-worker: install
	$(BIN)/python compose/build_images.py worker

compose-up: install
	$(BIN)/python compose/stack.py up $(if $(WORKERS),--workers)

compose-down: install
	$(BIN)/python compose/stack.py down
