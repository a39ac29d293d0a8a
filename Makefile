# Two commands do all the set-up on a fresh machine:
#   make run    installs everything and runs the daemon on config/stemd.toml
#   make test   installs everything and runs the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0

.PHONY: run test setup ffmpeg tcmalloc jemalloc clean

run: setup
	$(VENV)/bin/stemd --config config/stemd.toml run

test: setup
	$(PY) -m pytest -q

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml | ffmpeg tcmalloc jemalloc
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU build of torch first, so the package's "torch" requirement is already met
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

ffmpeg:
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || \
	  { echo "installing ffmpeg"; \
	    if command -v apt-get >/dev/null; then \
	      SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq ffmpeg; \
	    elif command -v brew >/dev/null; then brew install ffmpeg; \
	    else echo "please install ffmpeg" >&2; exit 1; fi; }

# optional: worker processes use tcmalloc when it is installed (faster, flatter memory)
tcmalloc:
	@[ "$$(uname)" != Linux ] || ls /usr/lib/*/libtcmalloc*.so.4 /usr/lib64/libtcmalloc*.so.4 2>/dev/null | grep -q . || \
	  ! command -v apt-get >/dev/null || \
	  { echo "installing tcmalloc (optional)"; SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get install -y -qq libtcmalloc-minimal4 >/dev/null 2>&1 || \
	    { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libtcmalloc-minimal4; } || \
	    echo "tcmalloc not installed; workers use the system malloc"; }

# optional: ONNX Runtime workers use jemalloc when it is installed (docs/benchmarks.md)
jemalloc:
	@[ "$$(uname)" != Linux ] || ls /usr/lib/*/libjemalloc.so.2 /usr/lib64/libjemalloc.so.2 2>/dev/null | grep -q . || \
	  ! command -v apt-get >/dev/null || \
	  { echo "installing jemalloc (optional)"; SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get install -y -qq libjemalloc2 >/dev/null 2>&1 || \
	    { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libjemalloc2; } || \
	    echo "jemalloc not installed; workers use tcmalloc or the system malloc"; }

clean:
	rm -rf $(VENV) build *.egg-info
