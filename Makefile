# unirealm: `make demo` and `make test` each bootstrap a fresh Debian 12 machine, then run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BUILD  := build
STAMP  := $(VENV)/.installed
# Cross toolchain (guest code, examples), what pylibfdt's build needs, and the tools tests compare with.
APT_PKGS := gcc gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu swig python3-dev python3-venv \
            device-tree-compiler cpio sqlite3 curl redis-tools qemu-user-static libslirp0 \
            libseccomp2
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all setup toolchain test test-huge test-fast typecheck lint demo clean bench bench-goals fuzz corpus coverage mutate

all: test

toolchain:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@# Debian arm64 packages for `unirealm build --debian` (examples/sqlite, tests/e2e/test_apps.py)
	@if ! dpkg --print-foreign-architectures | grep -qx arm64; then \
	  $(SUDO) dpkg --add-architecture arm64 && $(SUDO) apt-get update -qq; \
	elif ! apt-cache policy libc6:arm64 | grep -q 'Candidate: [0-9]'; then $(SUDO) apt-get update -qq; fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: toolchain $(STAMP)

test: setup typecheck
	$(VENV)/bin/ruff check src tests bench
	$(PY) -m pytest -p no:cacheprovider

# mypy over src/ with pyproject.toml's [tool.mypy] settings
typecheck: setup
	$(VENV)/bin/mypy

# the tests too long for `make test` (16 MiB redis values in each environment: minutes each)
test-huge: setup
	$(PY) -m pytest -p no:cacheprovider -m huge

# the unit tests alone (no image boots): a quick loop while working
test-fast: setup
	$(PY) -m pytest -p no:cacheprovider -m "not e2e"

# Coverage of every Python process the tests start, `unirealm run` subprocesses included, with
# the guest code that ran inside realms (its image:// modules mapped back to src/ by
# tests/coverage_support/image_files.py). COVERAGE_TESTS narrows it (default: the whole suite).
# Booted kernels run in the VMM's process here (UNIREALM_IN_PROCESS_KERNEL=1): a kernel
# process has no file system to write coverage data to.
COVERAGE_TESTS ?=
COVERAGE_ENV := COVERAGE_PROCESS_START=$(CURDIR)/pyproject.toml PYTHONPATH=$(CURDIR)/src:$(CURDIR)/tests/coverage_support \
                UNIREALM_IN_PROCESS_KERNEL=1
coverage: setup
	rm -f .coverage .coverage.*
	$(COVERAGE_ENV) $(PY) -m pytest -p no:cacheprovider $(COVERAGE_TESTS)
	$(COVERAGE_ENV) $(PY) -m coverage combine -q
	$(COVERAGE_ENV) $(PY) -m coverage report

# Mutation testing (mutmut, in a scratch copy: build/mutate): rmm/, attest/, machine/, host/devices/
# and guest/ against tests/rmm, tests/attest, tests/machine, tests/host, tests/guest; narrow it with
# e.g. MUTATE_ONLY=src/unirealm/rmm/s2tte.py MUTATE_TESTS=tests/rmm. Scores in build/mutate/score.json.
# MUTATE_SAMPLE=N scores a systematic sample of at most N mutants per module (README's table).
MUTATE_ONLY ?=
MUTATE_TESTS ?=
MUTATE_SAMPLE ?=
mutate: setup
	$(PY) tests/mutation.py $(if $(MUTATE_ONLY),--only $(MUTATE_ONLY)) $(if $(MUTATE_TESTS),--tests $(MUTATE_TESTS)) \
	  $(if $(MUTATE_SAMPLE),--sample $(MUTATE_SAMPLE))

# Long fuzzing runs with invariants (tests/fuzz; >= 10^5 RMI calls); totals in build/fuzz-report.json.
fuzz: setup
	CI=true UNIREALM_FUZZ=long $(PY) -m pytest -p no:cacheprovider -q -s tests/fuzz

# Rewrite the checked-in corpora of malformed inputs the fuzz tests replay.
corpus: setup
	$(PY) tests/fuzz/make_corpus.py

lint: setup
	$(VENV)/bin/ruff check src tests bench

demo: setup $(BUILD)/helloworld.img
	$(VENV)/bin/unirealm demo --image $(BUILD)/helloworld.img

$(BUILD)/hello: examples/helloworld/hello.c | setup
	@mkdir -p $(BUILD)
	aarch64-linux-gnu-gcc -static -O2 -o $@ $<

# The image carries the unikernel: rebuild it when the guest or arch sources change.
GUEST_SOURCES := $(shell find src/unirealm/guest src/unirealm/arch -name '*.py')

$(BUILD)/helloworld.img: $(BUILD)/hello $(GUEST_SOURCES) | setup
	$(VENV)/bin/unirealm build $(BUILD)/hello -o $@ --name helloworld

bench: setup $(BUILD)/sqlite3.img $(BUILD)/redis.img
	$(PY) bench/run.py
	$(PY) bench/goals.py --readme

# The speed goals alone, each with its same-run baseline; README's Benchmarks table is rewritten
bench-goals: setup $(BUILD)/sqlite3.img $(BUILD)/redis.img
	$(PY) bench/goals.py --readme

clean:
	rm -rf $(BUILD)

# examples/sqlite: Debian's sqlite3 in an image, its database in an initrd
$(BUILD)/sqlite3.img: $(GUEST_SOURCES) | setup
	@mkdir -p $(BUILD)
	$(VENV)/bin/unirealm build --debian sqlite3 --app /usr/bin/sqlite3 -o $@

$(BUILD)/db.cpio: setup examples/sqlite/schema.sql examples/sqlite/make_db.sh
	sh examples/sqlite/make_db.sh $(BUILD)/sqlite-root $@

# examples/pthreads: a static pthread program (mutex, condvar, join, __thread) in an image
$(BUILD)/pthreads: examples/pthreads/pthreads.c | setup
	@mkdir -p $(BUILD)
	aarch64-linux-gnu-gcc -static -O2 -pthread -o $@ $<

$(BUILD)/pthreads.img: $(BUILD)/pthreads $(GUEST_SOURCES) | setup
	$(VENV)/bin/unirealm build $(BUILD)/pthreads -o $@ --name pthreads

# Debian's busybox-static: applets by name, e.g. --params="-- sh -c \"ls /data | wc -l\""
$(BUILD)/busybox.img: $(GUEST_SOURCES) | setup
	@mkdir -p $(BUILD)
	$(VENV)/bin/unirealm build --debian busybox-static --app /bin/busybox -o $@

# examples/httpreply: a static HTTP server on guest port 8123 (-n mode=user,hostfwd=tcp:127.0.0.1:8123-:8123)
$(BUILD)/httpreply: examples/httpreply/httpreply.c | setup
	@mkdir -p $(BUILD)
	aarch64-linux-gnu-gcc -static -O2 -o $@ $<

$(BUILD)/httpreply.img: $(BUILD)/httpreply $(GUEST_SOURCES) | setup
	$(VENV)/bin/unirealm build $(BUILD)/httpreply -o $@ --name httpreply

# examples: Debian's redis-server (clients: the host's redis-cli and redis-benchmark)
$(BUILD)/redis.img: $(GUEST_SOURCES) | setup
	@mkdir -p $(BUILD)
	$(VENV)/bin/unirealm build --debian redis-server --app /usr/bin/redis-server -o $@
