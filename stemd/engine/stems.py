"""Which stems a job writes, which model sources it needs, and how they are finished."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch


@dataclass(frozen=True)
class StemLayout:
    sources: tuple[str, ...]                   # all the model's sources
    needed: list[int]                          # source indices to compute
    outputs: tuple[str, ...]                   # stem names written
    two_stems: Optional[str] = None
    other_method: str = "add"

    def finish(self, values: torch.Tensor, mean: float, std: float,
               mix: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalized ``[K, C, n]`` estimates to stem samples, like demucs's CLI."""
        out = values * torch.tensor(std, dtype=torch.float32) + torch.tensor(
            mean, dtype=torch.float32)
        by_name = {self.sources[k]: out[i] for i, k in enumerate(self.needed)}
        if self.two_stems is None:
            return by_name
        stem = by_name.pop(self.two_stems)
        result = {self.two_stems: stem}
        if self.other_method == "add":
            other = torch.zeros_like(stem)
            for value in by_name.values():
                other += value
            result[f"no_{self.two_stems}"] = other
        elif self.other_method == "minus":
            result[f"no_{self.two_stems}"] = mix - stem
        return result


def stem_layout(sources: Sequence[str], two_stems: Optional[str],
                other_method: str) -> StemLayout:
    names = tuple(sources)
    if two_stems is None:
        return StemLayout(names, list(range(len(names))), names)
    outputs = (two_stems,) if other_method == "none" else (two_stems, f"no_{two_stems}")
    if other_method == "add":
        needed = list(range(len(names)))
    else:
        needed = [names.index(two_stems)]
    return StemLayout(names, needed, outputs, two_stems, other_method)
