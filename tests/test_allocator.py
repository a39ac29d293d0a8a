"""workers.allocator: the malloc a worker process is started with."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stemd.worker import allocator
from stemd.config import load_config
from stemd.errors import ConfigError

TCMALLOC = allocator.find_tcmalloc()
IN_USE = "from stemd.worker.allocator import in_use; print(in_use())"


def _child_malloc(env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", IN_USE], env=env, capture_output=True,
                          text=True, check=True)
    return done.stdout.strip()


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_auto_preloads_the_backends_best_malloc_for_processes_started_afterwards(backend):
    installed = {"jemalloc": allocator.find_jemalloc(), "tcmalloc": TCMALLOC}
    best = next((kind for kind in allocator.PREFERRED[backend] if installed[kind]), None)
    if best is None:
        pytest.skip("neither jemalloc nor tcmalloc is installed")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[1])}
    assert allocator.preload("auto", env, backend) == installed[best]
    assert _child_malloc(env) == best
    assert allocator.in_use() == "system"          # this process is left as it started
    allocator.preload("system", env)
    assert "LD_PRELOAD" not in env                 # either malloc is taken out again


@pytest.mark.skipif(TCMALLOC is None, reason="tcmalloc is not installed")
def test_system_removes_a_preloaded_tcmalloc_and_keeps_other_preloads():
    env = {"LD_PRELOAD": f"{TCMALLOC} /opt/other/libfoo.so"}
    assert allocator.preload("system", env) is None
    assert env["LD_PRELOAD"] == "/opt/other/libfoo.so"
    env = {"LD_PRELOAD": str(TCMALLOC)}
    allocator.preload("system", env)
    assert "LD_PRELOAD" not in env


def test_preloading_twice_lists_the_library_once(tmp_path):
    library = tmp_path / "libtcmalloc_minimal.so.4"
    library.write_bytes(b"")
    env: dict[str, str] = {}
    allocator.preload(str(library), env)
    allocator.preload(str(library), env)
    assert env["LD_PRELOAD"] == str(library)


def test_an_allocator_that_is_not_a_file_is_a_config_error(tmp_path):
    config = tmp_path / "stemd.toml"
    config.write_text('[workers]\nallocator = "/nowhere/libtcmalloc.so.4"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert "allocator" in str(caught.value) and "/nowhere/libtcmalloc.so.4" in str(caught.value)
