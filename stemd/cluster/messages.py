"""What the cluster code reads and writes of the messages between dispatcher and worker.

The links and actors pass the worker's messages on unchanged except for these: a task
(its input travels), a finished job (its stems travel) and ``ready`` (the actor's pid).
Everything they need to know of the message format is here.
"""
from __future__ import annotations

from typing import Any

from stemd.engine.types import SeparationResult
from stemd.worker.process import Task

Message = Any


def kind(message: Message) -> str:
    """``task``, ``ahead``, ``ready``, ``done``, ``failed``, ... (lower case)."""
    return str(message[0])


def task_of(message: Message) -> Task:
    task: Task = message[1]
    return task


def with_task(message: Message, task: Task) -> Message:
    return ("task", task)


def job_of(message: Message) -> int:
    return int(message[1])


def ready_pid(message: Message) -> int:
    return int(message[1])


def done_parts(message: Message) -> tuple[int, SeparationResult, float]:
    _, job_id, result, wall = message
    return job_id, result, wall


def done(job_id: int, result: SeparationResult, wall: float) -> Message:
    return ("done", job_id, result, wall)


def failed(job_id: int, kind: str, message: str, hint: str, permanent: bool) -> Message:
    return ("failed", job_id, {"kind": kind, "message": message, "hint": hint,
                               "permanent": permanent})
