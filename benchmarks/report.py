"""Render benchmark results as Markdown (printed and written to docs/benchmarks.md)."""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

GB = 1e9


def write_report(path: Path, machine: dict[str, str], rows: list[dict[str, Any]],
                 batch: list[dict[str, Any]], precision: list[dict[str, Any]],
                 args: dict[str, Any], compare: list[dict[str, Any]] = (),  # type: ignore[assignment]
                 sweep: list[dict[str, Any]] = (),  # type: ignore[assignment]
                 gpu: list[dict[str, Any]] = ()) -> str:  # type: ignore[assignment]
    parts = [_machine(machine, args), _sweep(list(sweep)), _compare(list(compare)),
             _lengths(rows), _batch(batch), _gpu_batches(list(gpu)), _precision(precision)]
    text = "\n".join(p for p in parts if p)
    path.parent.mkdir(parents=True, exist_ok=True)
    marker = "<!-- results -->"
    old = path.read_text() if path.exists() else ""
    head = old.split(marker)[0] if marker in old else old
    path.write_text(head + marker + "\n" + text)
    return text


def _machine(machine: dict[str, str], args: dict[str, Any]) -> str:
    lines = [f"## Results ({time.strftime('%Y-%m-%d')}, device {args['device']}"
             f"{', quick mode' if args['quick'] else ''})", "", "Machine:", ""]
    lines += [f"- {key}: {value}" for key, value in machine.items()]
    return "\n".join(lines) + "\n"


def _sweep(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    torch_system = [r["ms"] for r in rows if r["backend"] == "torch" and r["malloc"] == "system"
                    and r.get("precision", "fp32") == "fp32"]
    base = torch_system[0] if torch_system else None
    lines = ["### Backend settings: one segment of the training length "
             "(1 x 2 x 343,980 for htdemucs), fresh process each",
             "", "Median of the timed passes after a first one; peak RSS of the whole process "
             "(model load and, for ONNX Runtime, the check against torch included).", "",
             "| backend | precision | malloc | ORT arena | ORT mem pattern | ms per segment | "
             "vs torch glibc | first pass | peak RSS |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ort = r["backend"] == "onnxruntime"
        vs = f"{r['ms'] / base:.2f}" if base else "-"
        lines.append(f"| {r['backend']} | {r.get('precision', 'fp32')} | {r['malloc']} | "
                     f"{_yes(r['arena']) if ort else '-'} | "
                     f"{_yes(r['pattern']) if ort else '-'} | {r['ms']:.0f} | {vs} | "
                     f"{r['first_ms']:.0f} | {r['peak_rss'] / GB:.2f} GB |")
    return "\n".join(lines) + "\n"


def _yes(flag: bool) -> str:
    return "on" if flag else "off"


def _compare(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    lines = ["### The demucs CLI against stemd on each backend", "",
             "Each track set runs in one process per engine; the CLI and stemd's backends "
             "alternate round by round. \"vs CLI\" is the median wall time over the CLI's "
             "median on the same set. Peak RSS is the largest of the rounds.", "",
             "| tracks | engine | malloc | rounds (wall) | median wall | vs CLI | peak RSS |",
             "|---|---|---|---|---|---|---|"]
    for label in dict.fromkeys(r["set"] for r in rows):
        in_set = [r for r in rows if r["set"] == label]
        cli = [r["wall"] for r in in_set if r["engine"] == "demucs CLI"]
        for engine in dict.fromkeys(r["engine"] for r in in_set):
            mine = [r for r in in_set if r["engine"] == engine]
            wall = statistics.median(r["wall"] for r in mine)
            ratio = f"{wall / statistics.median(cli):.2f}x" if cli else "-"
            walls = ", ".join(f"{r['wall']:.0f} s" for r in mine)
            lines.append(f"| {label} | {engine} | {mine[0]['malloc']} | {walls} | {wall:.1f} s | "
                         f"{ratio} | {max(r['rss'] for r in mine) / GB:.2f} GB |")
    return "\n".join(lines) + "\n"


def _lengths(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    lines = [f"### One track per process, by length (stemd on {rows[0].get('backend', 'torch')})",
             "",
             "| track | stemd s/min audio | CLI s/min audio | stemd / CLI wall | "
             "stemd peak RSS | CLI peak RSS | stemd peak VRAM |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['seconds']:g} s | {r['stemd_s_per_min']:.1f} | "
                     f"{_opt(r, 'cli_s_per_min', '{:.1f}')} | {_opt(r, 'ratio', '{:.2f}x')} | "
                     f"{r['stemd_rss'] / GB:.2f} GB | {_opt(r, 'cli_rss', '{:.2f} GB', GB)} | "
                     f"{_vram(r)} |")
    ratios = [r["ratio"] for r in rows if "ratio" in r]
    if ratios:
        lines += ["", f"Median stemd / CLI wall-time ratio: {statistics.median(ratios):.2f}x."]
    lines += _flatness(rows)
    return "\n".join(lines) + "\n"


def _flatness(rows: list[dict[str, Any]]) -> list[str]:
    if len(rows) < 2:
        return []
    short, long = min(rows, key=lambda r: r["seconds"]), max(rows, key=lambda r: r["seconds"])
    growth = long["stemd_rss"] / short["stemd_rss"] - 1
    return ["", f"stemd peak RSS from {short['seconds']:g} s to {long['seconds']:g} s: "
            f"{short['stemd_rss'] / GB:.2f} GB -> {long['stemd_rss'] / GB:.2f} GB "
            f"({growth * 100:+.1f} %)."]


def _opt(row: dict[str, Any], key: str, fmt: str, scale: float = 1.0) -> str:
    return fmt.format(row[key] / scale) if key in row else "-"


def _vram(row: dict[str, Any], key: str = "stemd_vram") -> str:
    return f"{row[key] / GB:.2f} GB" if row.get(key) else "-"


def _batch(batch: list[dict[str, Any]]) -> str:
    if not batch:
        return ""
    cli_walls = [b["wall"] for b in batch if b["layout"] == "demucs CLI"]
    cli = statistics.median(cli_walls) if cli_walls else None
    lines = ["### Several tracks (one demucs CLI call vs stemd)", "",
             "Each row is one run; CLI and daemon runs alternate round by round. "
             "\"vs CLI\" divides by the median CLI wall time.", "",
             "| run | round | wall | vs CLI | peak RSS (largest process) |", "|---|---|---|---|---|"]
    for b in batch:
        ratio = f"{b['wall'] / cli:.2f}x" if cli else "-"
        lines.append(f"| {b['layout']} | {b.get('round', '-')} | {b['wall']:.1f} s | {ratio} | "
                     f"{b['rss'] / GB:.2f} GB |")
    lines += _daemon_summary(batch, cli_walls)
    return "\n".join(lines) + "\n"


def _daemon_summary(batch: list[dict[str, Any]], cli_walls: list[float]) -> list[str]:
    daemon = [b for b in batch if b["layout"].startswith("stemd daemon")]
    if not daemon or not cli_walls:
        return []
    walls = [b["wall"] for b in daemon]
    rounds = {b["round"]: b["wall"] for b in daemon}
    per_round = [rounds[b["round"]] / b["wall"] for b in batch
                 if b["layout"] == "demucs CLI" and b.get("round") in rounds]
    return ["", f"Daemon vs CLI: median wall {statistics.median(walls):.1f} s vs "
            f"{statistics.median(cli_walls):.1f} s = "
            f"{statistics.median(walls) / statistics.median(cli_walls):.2f}x; "
            f"per-round ratios {', '.join(f'{r:.2f}x' for r in per_round)} "
            f"(median {statistics.median(per_round):.2f}x)."]


def _gpu_batches(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    lines = [f"### Batch size on the GPU (one {rows[0]['audio']:g} s track per process)", "",
             "\"decode\" runs before the model; \"separate\" is the model phase, with the "
             "stems encoded as it goes; \"encode\" is what is left to encode after it. "
             "\"GPU busy\" is NVML's utilization averaged over the whole file.", "",
             "| precision | batch | wall | decode | separate | encode | GPU busy | "
             "peak VRAM | peak RSS |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['precision']} | {r['batch']} | {r['wall']:.1f} s | "
                     f"{_secs(r, 'decode')} | {_secs(r, 'separate')} | {_secs(r, 'encode')} | "
                     f"{_busy(r)} | {_vram(r, 'vram')} | "
                     f"{_opt(r, 'rss', '{:.2f} GB', GB)} |")
    return "\n".join(lines) + "\n"


def _secs(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:.2f} s" if row.get(key) is not None else "-"


def _busy(row: dict[str, Any]) -> str:
    return f"{row['gpu_busy'] * 100:.0f} %" if row.get("gpu_busy") is not None else "-"


def _precision(precision: list[dict[str, Any]]) -> str:
    if not precision:
        return ""
    first = precision[0]
    names = list(first.get("stems", {}))
    lines = [f"### Precision (one track, no random shifts, stems against {first['mode']})",
             "", "| mode | ran at | wall | separate | vs " + first["mode"] + " (separate) | "
             "GPU busy | peak VRAM | median SDR | " + " | ".join(names) + " |",
             "|---|---|---|---|---|---|---|---|" + "---|" * len(names)]
    for p in precision:
        sdr = f"{p['sdr']:.1f} dB" if "sdr" in p else "-"
        per_stem = " | ".join(f"{p['stems'][n]:.1f}" if n in p.get("stems", {}) else "-"
                              for n in names)
        ratio = (f"{p['separate'] / first['separate']:.2f}x"
                 if p.get("separate") and first.get("separate") else "-")
        lines.append(f"| {p['mode']} | {p.get('ran', '-')} | {p['wall']:.1f} s | "
                     f"{_secs(p, 'separate')} | {ratio} | {_busy(p)} | "
                     f"{_vram(p, 'vram')} | {sdr} | {per_stem} |")
    return "\n".join(lines) + "\n"
