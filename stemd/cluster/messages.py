"""What the cluster code reads and writes of the messages between dispatcher and worker.

The links and actors pass the worker's messages (``stemd.worker.protocol``) on unchanged
except for these: a task (its input travels), a finished job (its stems travel) and
``Ready`` (the actor's pid). Everything they need to know of the protocol is here.
"""
from __future__ import annotations

from typing import Any

from stemd.engine.types import SeparationResult
from stemd.worker.protocol import Ahead, Done, Failed, Ready, Task, TaskMsg

Message = Any
_KINDS = {TaskMsg: "task", Ahead: "ahead", Ready: "ready", Done: "done", Failed: "failed"}


def kind(message: Message) -> str:
    """``task``, ``ahead``, ``ready``, ``done``, ``failed``, or ``other``."""
    return _KINDS.get(type(message), "other")


def task_of(message: TaskMsg) -> Task:
    return message.task


def with_task(message: TaskMsg, task: Task) -> TaskMsg:
    return TaskMsg(task)


def job_of(message: Message) -> int:
    return int(message.job_id)


def ready_pid(message: Ready) -> int:
    return message.pid


def done_parts(message: Done) -> tuple[int, SeparationResult, float]:
    return message.job_id, message.result, message.wall


def done(job_id: int, result: SeparationResult, wall: float) -> Done:
    return Done(job_id, result, wall)


def failed(job_id: int, kind: str, message: str, hint: str, permanent: bool) -> Failed:
    return Failed(job_id, kind, message, hint, permanent)
