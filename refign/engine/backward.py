"""Each loss back-propagated the moment the method computes it, as the official training steps do, so that
each student pass's activations are freed before the next pass runs
(docs/self-training.md#one-backward-per-loss). A method therefore hands each loss to the ``backward`` it is
called with, and returns only detached scalars and panels (``MethodStep`` checks it).
"""

from __future__ import annotations

import torch
from torch import nn


class LossBackward:
    """The ``backward(name, loss, retain_graph=False)`` a method's forward gets for one step.

    Each loss but the method's last declared one (``loss_names[-1]``) is back-propagated at once. The last is
    kept for ``backward_last``, called once the method's forward has returned: under DDP that is where its
    reducer expects gradients, so the last backward all-reduces the step's summed gradient once, while the
    earlier ones, run inside DDP's forward, accumulate locally as under ``no_sync`` (nothing is computed after
    a method's last loss, so keeping it costs no memory). Each backward is scaled by the loss scaler (fp16)
    and runs with autocast off (torch advises against a backward under autocast); the detached losses are kept
    for the logs and the non-finite guard. ``names``: the method's ``loss_names``; ``owner``: its name, for
    the errors.
    """

    def __init__(
        self, names: tuple[str, ...], owner: str, scaler: torch.amp.GradScaler, device_type: str
    ) -> None:
        if not names:
            raise ValueError(f"{owner}.loss_names is empty: declare the losses its forward delivers")
        self.names, self.owner = tuple(names), owner
        self.scaler, self.device_type = scaler, device_type
        self.losses: dict[str, torch.Tensor] = {}  # detached, in delivery order
        self._last: torch.Tensor | None = None

    def __call__(self, name: str, loss: torch.Tensor, *, retain_graph: bool = False) -> None:
        expected = self.names[len(self.losses)] if len(self.losses) < len(self.names) else None
        if name != expected:
            raise RuntimeError(
                f"{self.owner} delivered the loss {name!r} where its loss_names {list(self.names)} expect "
                f"{expected!r} next"
            )
        self.losses[name] = loss.detach()
        if name != self.names[-1]:
            self.run(loss, retain_graph)
        elif retain_graph:
            raise ValueError(f"{self.owner}'s last loss {name!r} cannot keep its graph (retain_graph=True)")
        else:
            self._last = loss

    def pending(self) -> torch.Tensor:
        """The last loss, still to be back-propagated; fails if the method left a declared loss out."""
        if self._last is None:
            missing = [n for n in self.names if n not in self.losses]
            raise RuntimeError(f"{self.owner}'s forward did not deliver its loss(es) {missing}")
        return self._last

    def backward_last(self, loss: torch.Tensor) -> None:
        """Back-propagate the last loss (``pending()``, or DDP's pass-through of it)."""
        self._last = None
        self.run(loss, retain_graph=False)

    def run(self, loss: torch.Tensor, retain_graph: bool) -> None:
        with torch.autocast(self.device_type, enabled=False):
            self.scaler.scale(loss).backward(retain_graph=retain_graph)


class MethodStep(nn.Module):
    """What the step calls, and DDP wraps: the method's forward, then its last loss returned beside its
    outputs, so that DDP sees the tensor whose backward it all-reduces. Refuses a tensor that requires grad (a
    loss returned instead of handed to ``backward``) and ``loss*`` keys (the delivered losses' names)."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(
        self, batch: dict[str, torch.Tensor], step: int, backward: LossBackward
    ) -> tuple[dict, torch.Tensor]:
        out = self.method(batch, step, backward)
        owner = type(self.method).__name__
        for key, value in out.items():
            if torch.is_tensor(value) and value.requires_grad:
                raise RuntimeError(
                    f"{owner} returned {key!r}, a tensor that requires grad: hand every loss to "
                    "backward(name, loss) and return only detached values"
                )
            if key.startswith("loss"):
                raise RuntimeError(f"{owner} returned {key!r}: 'loss*' keys are the delivered losses' names")
        return out, backward.pending()
