"""Probe an input file with ffprobe and make sure ffmpeg can decode it.

Called at intake for every file, so it stays cheap: one ffprobe call and two
short ffmpeg decodes (the first seconds and the last seconds of the file).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from stemd.errors import InputError
from stemd.engine.types import AudioInfo

log = logging.getLogger(__name__)

MIN_RATE = 8_000
MAX_RATE = 384_000
MAX_CHANNELS = 32
HEAD_SECONDS = 2.0
TAIL_SECONDS = 5.0
TIMEOUT = 60.0
NOT_AUDIO_HINT = "Drop an audio file (wav, flac, mp3, ogg, m4a...) into the inbox."


def probe(path: Path, decodable_check: bool = True) -> AudioInfo:
    """Describe ``path``'s first audio stream; raise InputError when it cannot be used."""
    size = _check_file(path)
    _check_wav_complete(path, size)
    info = _ffprobe(path)
    stream = _audio_stream(info, path)
    audio = _audio_info(info, stream, path)
    if decodable_check:
        _check_decodes(path, audio)
    return audio


def _check_file(path: Path) -> int:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError(f"{path.name} does not exist any more.",
                         "It was moved or deleted before stemd could read it.") from None
    if not path.is_file():
        raise InputError(f"{path.name} is not a regular file.", NOT_AUDIO_HINT)
    if size == 0:
        raise InputError(f"{path.name} is empty (0 bytes).",
                         "Copy the file again; the copy may not have finished.")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path.name} cannot be read: permission denied.",
                         "Give the user running stemd read permission on the file.")
    return size


def _check_wav_complete(path: Path, size: int) -> None:
    """A WAV whose data chunk declares more bytes than the file holds was cut off."""
    if path.suffix.lower() != ".wav":
        return
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return
    pos = 12
    while pos + 8 <= len(head):
        chunk, length = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if chunk == b"data":
            held = size - (pos + 8)
            if length not in (0, 0xFFFFFFFF) and held < length * 0.99:
                raise InputError(
                    f"The file is truncated: it declares {length} bytes of audio but holds "
                    f"only {max(held, 0)}.",
                    "The copy or download did not finish: drop the complete file again.")
            return
        pos += 8 + length + (length & 1)


def _ffprobe(path: Path) -> dict[str, Any]:
    cmd = ["ffprobe", "-v", "error", "-print_format", "json",
           "-show_format", "-show_streams", str(path)]
    done = _run(cmd, path)
    if done.returncode != 0:
        reason = _first_line(done.stderr) or "unknown format"
        if "End of file" in reason:
            raise InputError(f"{path.name} is truncated: it ends inside its header.",
                             "The copy may not have finished; copy the file again.")
        raise InputError(f"{path.name} is not an audio file ffmpeg can read ({reason}).",
                         NOT_AUDIO_HINT)
    try:
        return json.loads(done.stdout or b"{}")
    except json.JSONDecodeError:
        raise InputError(f"{path.name} could not be probed.", NOT_AUDIO_HINT) from None


def _run(cmd: list[str], path: Path) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=TIMEOUT, check=False)
    except FileNotFoundError:
        raise InputError("ffmpeg/ffprobe is not installed.",
                         "Install ffmpeg (for example `apt-get install ffmpeg`).") from None
    except subprocess.TimeoutExpired:
        raise InputError(f"{path.name} took too long to probe.",
                         "The file may be damaged; re-export it.") from None


def _first_line(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    return text.splitlines()[-1].split(": ", 1)[-1] if text else ""


def _audio_stream(info: dict[str, Any], path: Path) -> dict[str, Any]:
    streams = [s for s in info.get("streams", []) if s.get("codec_type") == "audio"]
    if not streams:
        raise InputError(f"{path.name} has no audio stream.", NOT_AUDIO_HINT)
    return streams[0]


def _audio_info(info: dict[str, Any], stream: dict[str, Any], path: Path) -> AudioInfo:
    rate = _as_int(stream.get("sample_rate"))
    channels = _as_int(stream.get("channels"))
    if rate <= 0 or channels <= 0:
        raise InputError(f"{path.name} is not an audio file ffmpeg can read (its audio "
                         "stream has no sample rate or channels).", NOT_AUDIO_HINT)
    if not MIN_RATE <= rate <= MAX_RATE:
        raise InputError(f"{path.name} has an unusable sample rate ({rate} Hz).",
                         f"Use audio sampled between {MIN_RATE} and {MAX_RATE} Hz.")
    if not 1 <= channels <= MAX_CHANNELS:
        raise InputError(f"{path.name} has an unusable channel count ({channels}).",
                         f"Use audio with 1 to {MAX_CHANNELS} channels.")
    duration = _duration(info, stream)
    if duration <= 0:
        raise InputError(f"{path.name} holds no audio (zero duration).",
                         "Export the track again; the file has no samples.")
    fmt = info.get("format", {})
    return AudioInfo(duration=duration, sample_rate=rate, channels=channels,
                     codec=str(stream.get("codec_name", "")),
                     container=str(fmt.get("format_name", "")))


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _duration(info: dict[str, Any], stream: dict[str, Any]) -> float:
    for value in (stream.get("duration"), info.get("format", {}).get("duration")):
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return 0.0


def _check_decodes(path: Path, audio: AudioInfo) -> None:
    if _decoded_frames(path, 0.0, HEAD_SECONDS, audio) == 0:
        raise InputError(f"{path.name} cannot be decoded: its audio data is damaged.",
                         "Re-export or copy the file again.")
    tail = max(0.0, audio.duration - TAIL_SECONDS)
    if tail > HEAD_SECONDS and _decoded_frames(path, tail, 2 * TAIL_SECONDS, audio) == 0:
        raise InputError(f"{path.name} is truncated: it stops before its stated "
                         f"duration of {audio.duration:.1f} s.",
                         "The copy may not have finished; copy the file again.")


def _decoded_frames(path: Path, start: float, seconds: float, audio: AudioInfo) -> int:
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-ss", f"{start:.3f}", "-t", f"{seconds:.3f}",
           "-i", str(path), "-map", "0:a:0", "-f", "f32le", "-ac", "1", "-"]
    done = _run(cmd, path)
    frames = len(done.stdout) // 4
    log.debug("decode check %s at %.1fs: rc=%s frames=%d", path.name, start,
              done.returncode, frames)
    return frames if done.returncode == 0 or frames else 0
