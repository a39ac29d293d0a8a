"""A worker decodes the next job's input while its model works on the current one.

Halfway through a job the dispatcher tells the worker which queued job it will
probably run next (``protocol.Ahead(job_id, input, model, folder)``). The worker decodes
that input on a thread into ``folder``, inside the job's work folder. When the next
task arrives, the result is used only if it is for that job, the same model and an
input that has not changed since (size, mtime, inode); anything else is thrown away, and the task
decodes its input itself. Nothing depends on the hint: it only saves time.
"""
from __future__ import annotations

import logging
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from stemd.logs import job_context
from stemd.watch.entries import Signature, signature

log = logging.getLogger(__name__)


@dataclass
class Decoding:
    job_id: int
    input: Path
    model: str
    folder: Path
    stamp: Optional[Signature]
    mix: Any = None                          # engine.PreparedMix once decoded
    error: Optional[str] = None
    done: threading.Event = field(default_factory=threading.Event)


class Lookahead:
    """At most one input decoded ahead; see the module docstring."""

    def __init__(self) -> None:
        self.current: Optional[Decoding] = None

    def start(self, model: Any, model_name: str, job_id: int, input: str, folder: str) -> None:
        self.discard()
        ahead = Decoding(job_id, Path(input), model_name, Path(folder), signature(Path(input)))
        self.current = ahead
        threading.Thread(target=_decode, args=(ahead, model), name="stemd-lookahead",
                         daemon=True).start()

    def take(self, job_id: int, input: str, model_name: str) -> Any:
        """The decoded input for this task, or None (anything else is removed)."""
        ahead, self.current = self.current, None
        if ahead is None:
            return None
        ahead.done.wait()
        usable = (ahead.job_id == job_id and ahead.input == Path(input) and ahead.mix is not None
                  and ahead.model == model_name and ahead.mix.path.is_file()
                  and signature(ahead.input) == ahead.stamp)
        if usable:
            log.info("job %s: using the input decoded while the previous job ran (%.1f s saved)",
                     job_id, ahead.mix.seconds)
            return ahead.mix
        if ahead.job_id == job_id:
            log.info("job %s: the input decoded ahead is not usable (%s); decoding again",
                     job_id, ahead.error or "changed or removed")
        _remove(ahead)
        return None

    def discard(self) -> None:
        self.take(-1, "", "")


def _decode(ahead: Decoding, model: Any) -> None:
    from stemd.engine import prepare_input
    with job_context(ahead.job_id):
        try:
            ahead.folder.mkdir(parents=True, exist_ok=True)
            ahead.mix = prepare_input(model, ahead.input, ahead.folder)
        except Exception as exc:  # the task will decode (and report) it properly
            ahead.error = f"{type(exc).__name__}: {exc}"
            log.debug("job %s: decoding ahead failed: %s", ahead.job_id, ahead.error)
        finally:
            ahead.done.set()


def _remove(ahead: Decoding) -> None:
    shutil.rmtree(ahead.folder, ignore_errors=True)

