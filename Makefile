# Two commands do all the set-up on a fresh machine:
#   make run    installs everything and runs the daemon on your config file
#               (~/.config/stemd/stemd.toml, created from config/stemd.toml on the first run)
#   make test   installs everything and runs the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH_VERSION := 2.13.0
# TORCH=... installs exactly that with pip (e.g. TORCH=torch for the newest CUDA build);
# unset, the build is picked: CUDA when an NVIDIA GPU is found, else the CPU build
TORCH  ?= torch==$(TORCH_VERSION)
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

BINDIR ?= $(HOME)/.local/bin

.PHONY: run test setup install torch ffmpeg tcmalloc jemalloc clean

run: install
	$(VENV)/bin/stemd run

# puts the `stemd` command on the user's PATH (a link to the one in the virtual environment)
install: setup
	@mkdir -p "$(BINDIR)"
	@if [ -e "$(BINDIR)/stemd" ] && [ ! -L "$(BINDIR)/stemd" ]; then \
	  echo "note: $(BINDIR)/stemd exists and is not ours; left alone (use $(VENV)/bin/stemd)"; \
	else ln -sfn "$(abspath $(VENV))/bin/stemd" "$(BINDIR)/stemd" && echo "stemd command: $(BINDIR)/stemd"; fi
	@case ":$$PATH:" in *":$(BINDIR):"*) ;; *) \
	  echo "note: $(BINDIR) is not on your PATH; add it (export PATH=\"$(BINDIR):\$$PATH\" in ~/.profile) or type $(abspath $(VENV))/bin/stemd";; esac

test: setup
	$(PY) -m pytest -q

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml | ffmpeg tcmalloc jemalloc
	@echo "creating the virtual environment $(VENV)"
	@$(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@# torch first, so the package's "torch" requirement is already met
	@$(MAKE) --no-print-directory torch
	@echo "installing stemd and its dependencies"
	@PYTHONWARNINGS=ignore $(PY) -m pip install -q -e ".[test]"   # no build-backend chatter
	@touch $@
	@echo "set-up done"

# torch: kept when the wanted version is installed; TORCH=... as given; with an NVIDIA GPU
# the CUDA build (PyPI's Linux default); otherwise the CPU build from PyTorch's CPU index,
# or from the default index when that index cannot be reached (a local CPU wheel, a mirror)
torch:
	@if $(PY) -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VERSION)')" 2>/dev/null \
	    && [ "$(origin TORCH)" = file ]; then \
	  echo "torch $(TORCH_VERSION) is already installed"; \
	elif [ "$(origin TORCH)" != file ]; then \
	  echo "installing $(TORCH) (as given by TORCH=)"; $(PY) -m pip install $(PIP_PROGRESS) "$(TORCH)"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "NVIDIA GPU found: installing the CUDA build of torch $(TORCH_VERSION) (a few GB)"; \
	  $(PY) -m pip install $(PIP_PROGRESS) "$(TORCH)"; \
	elif [ "$$(uname)" != Linux ]; then \
	  echo "installing torch $(TORCH_VERSION)"; $(PY) -m pip install $(PIP_PROGRESS) "$(TORCH)"; \
	else \
	  echo "no NVIDIA GPU: installing the CPU build of torch $(TORCH_VERSION) (about 200 MB)"; \
	  $(PY) -m pip install $(PIP_PROGRESS) --retries 1 --timeout 20 --index-url "$(TORCH_CPU_INDEX)" "$(TORCH)" 2>/dev/null || \
	  { echo "PyTorch's CPU index cannot be reached; trying the default package index"; \
	    $(PY) -m pip install $(PIP_PROGRESS) "$(TORCH)"; }; \
	fi

# quiet, but with a progress bar for the long downloads (when on a terminal)
PIP_PROGRESS = --progress-bar on

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
