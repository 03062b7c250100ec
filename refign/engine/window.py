"""The logging window: each step's scalars summed on the device (reading one on the host would wait for the
device), read in one transfer every ``log_every`` steps: the means over the window, as mmcv's logger hook logs
them, and the counters of the non-finite guard. What to do about a streak is the trainer's decision.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class WindowSummary:
    """A window's means, steps and skipped steps, and the longest streak of consecutive skipped steps so far
    (a streak carries over from one window into the next)."""

    means: dict[str, float]
    steps: int
    skipped: int
    worst_streak: int


class MetricWindow:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.streak = torch.zeros((), device=device)  # consecutive skipped steps, 0 after a good one
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, torch.Tensor | float] = {}
        self.counts: dict[str, int] = {}
        self.worst_streak = torch.zeros((), device=self.device)
        self.skipped = torch.zeros((), device=self.device)

    def add(self, logged: dict[str, torch.Tensor | float], skipped: torch.Tensor) -> None:
        """Add a step's scalars (``0.0 + t`` is a new tensor, so a later in-place update of a method's buffer
        does not leak in) and its skip flag (1 where the step was skipped), without reading anything."""
        for k, v in logged.items():
            self.sums[k] = self.sums.get(k, 0.0) + (v.float() if torch.is_tensor(v) else v)
            self.counts[k] = self.counts.get(k, 0) + 1
        self.streak = (self.streak + 1) * skipped
        self.worst_streak = torch.maximum(self.worst_streak, self.streak)
        self.skipped = self.skipped + skipped

    def read(self) -> WindowSummary:
        """The window's means and guard counters, read from the device in one transfer; starts a new window."""
        on_device = [k for k, v in self.sums.items() if torch.is_tensor(v)]
        *values, worst, skipped = torch.stack(
            [*(self.sums[k] for k in on_device), self.worst_streak, self.skipped]
        ).tolist()
        read = dict(zip(on_device, values, strict=True))
        summary = WindowSummary(
            means={k: read.get(k, v) / self.counts[k] for k, v in self.sums.items()},
            steps=self.counts.get("loss", 0),
            skipped=int(skipped),
            worst_streak=int(worst),
        )
        self._reset()
        return summary
