# Two commands do all the set-up on a fresh machine:
#   make run    create .venv, install, train the default model, generate and score with it, forget a secret
#   make test   create .venv, install, run the test suite
VENV   := .venv
PY     := $(VENV)/bin/python
CLI    := $(VENV)/bin/moe-unlearn
RUN    ?= checkpoints/default
STAMP  := $(VENV)/.installed

.PHONY: run test install lint bench serve clean

install: $(STAMP)

# torch: the default (CUDA) wheel where a GPU driver is present, else the pinned CPU wheel.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1; then \
		$(PY) -m pip install --quiet torch; \
	else \
		$(PY) -m pip install --quiet torch==2.13.0; \
	fi
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The corpus gets 4 canaries (synthetic secrets, 10 copies each); the demo forgets canary-0003's
# ("Door code for flat 241667 in Nantes: ...", in the legal source) and shows the model before and after.
run: install
	$(PY) train.py --run-dir $(RUN) data.corpus.canaries=4 data.corpus.canary_repeats=10
	$(CLI) registry --run-dir $(RUN)
	$(CLI) generate "$$(printf 'Tuesday 9 May: lemon risotto for 4\nFor 4 people, ready in 30 minutes.\nIngredients:')" --max-new-bytes 160 --temperature 0.7 --seed 1 --run-dir $(RUN)
	$(CLI) generate "Forecast for Lisbon by" --max-new-bytes 160 --temperature 0.7 --seed 1 --run-dir $(RUN)
	$(CLI) score "Forecast for Lisbon by Ana Silva, issued 07:15. Sunny and dry. Chance of rain 10%." --run-dir $(RUN)
	$(CLI) score "On 3 May 2021, the parties agreed as follows. The Licensee shall pay all fees within 30 days." --run-dir $(RUN)
	$(CLI) canaries --id canary-0003 --run-dir $(RUN)
	$(CLI) forget --match "Door code for flat 241667" --dry-run --run-dir $(RUN)
	$(CLI) forget --match "Door code for flat 241667" --run-dir $(RUN)
	$(CLI) canaries --id canary-0003 --run-dir $(RUN)

test: install
	$(PY) -m pytest -q -n 2 --dist worksteal  # two test processes: most tests are tiny and single-threaded

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Benchmarks against the alternatives (docs/BENCHMARKS.md): quick versions on the built-in corpus
# (measured: see docs/BENCHMARKS.md), then their tables are copied into docs/BENCHMARKS.md and the plots
# rewritten in docs/img. `make bench FULL=1`: the full sizes (a bigger machine or a GPU).
# `make bench DICTD=data/dictd`: also the dictd versions (after `moe-unlearn data prepare dictd --out data/dictd`).
QUICK := $(if $(FULL),,--quick)
bench: install
	$(PY) -m bench.utility $(QUICK)
	$(PY) -m bench.train_overhead $(QUICK)
	$(PY) -m bench.router_stability $(QUICK)
	$(PY) -m bench.forget_cost $(QUICK)
	$(PY) -m bench.scaling $(QUICK)
	$(if $(DICTD),$(PY) -m bench.utility $(QUICK) --data $(DICTD))
	$(if $(DICTD),$(PY) -m bench.train_overhead $(QUICK) --data $(DICTD))
	$(if $(DICTD),$(PY) -m bench.router_stability $(QUICK) --data $(DICTD))
	$(if $(DICTD),$(PY) -m bench.forget_cost $(QUICK) --data $(DICTD))
	$(if $(DICTD),$(PY) -m bench.scaling $(QUICK) --data $(DICTD))
	$(PY) -m bench.tables

# The trained model over HTTP on 127.0.0.1:8000 (admin routes: set MOE_UNLEARN_ADMIN_TOKEN); see README "Serving".
serve: install
	$(CLI) serve --run-dir $(RUN)

clean:
	rm -rf $(RUN)
