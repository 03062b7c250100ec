"""The interface between the method-agnostic engine and a domain-adaptation method."""

from __future__ import annotations

from typing import ClassVar, Protocol

import torch
from torch import nn

from refign.models.segmentor import Segmentor


class Backward(Protocol):
    """What the engine hands a method's forward (``refign.engine.backward.LossBackward``): back-propagates
    ``loss`` (scaled, logged, checked for NaN/inf by the engine) so that the pass that made it is freed.
    ``retain_graph=True`` keeps that pass for a later loss that back-propagates through it too."""

    def __call__(self, name: str, loss: torch.Tensor, *, retain_graph: bool = False) -> None: ...


class UDAMethod(nn.Module):
    """A training algorithm wrapped around a segmentation model.

    The engine calls ``method(batch, step, backward)`` once per optimiser step (through DDP when
    distributed). The method hands each loss to ``backward(name, loss)`` as soon as it is computed, in the
    order ``loss_names`` declares, and the engine back-propagates it at once: each student pass's
    activations are freed before the next pass runs, as in the official steps
    (docs/self-training.md#one-backward-per-loss). A loss that a later one back-propagates through as well
    is handed over with ``retain_graph=True`` (the source loss before DAFormer's feature distance). The
    returned dict holds only detached scalars and panels, which are logged: the engine refuses a returned
    tensor that requires grad (a loss kept out of ``backward`` would keep its pass alive). A method
    therefore never calls ``Tensor.backward`` itself, nor touches the optimiser, AMP, DDP or checkpoint
    files.

    Batch keys (tensors already on the right device): ``image_src`` (B,3,H,W) normalised, ``semantic_src``
    (B,H,W) int64 train ids with 255 = ignore, and for adaptation methods ``image_trg`` (B,3,H,W) plus
    ``image_ref`` (B,3,H,W) where the target dataset has reference images.

    When the engine sets ``wants_images`` before a step, the method may add ``img/<name>`` entries: (H, W, 3)
    uint8 panels that are saved as PNG and sent to wandb.

    What a method can do is stated by its class, so that the build and the entry points never need to know
    concrete methods (nor read constructor signatures):

    * ``self_training``: it pseudo-labels the target and accepts a ``pseudo_labeler`` argument (Refign plugs
      in there).
    * ``needs_target``: its batches carry target images (``image_trg``); False = no target loader is built.
    * ``segmentor_types``: the segmentor classes whose training path it implements (exact types: HRDA's
      multi-resolution segmentor is a ``Segmentor`` subclass but only ``uda=hrda`` trains its two views).
    """

    loss_names: tuple[str, ...] = ()  # the losses ``forward`` delivers, in order (a class or instance value)
    self_training: ClassVar[bool] = False
    needs_target: ClassVar[bool] = True
    segmentor_types: ClassVar[tuple[type[Segmentor], ...]] = (Segmentor,)
    wants_images: bool = False

    def __init__(self, model: Segmentor) -> None:
        super().__init__()
        if type(model) not in self.segmentor_types:
            trains = " or ".join(t.__name__ for t in self.segmentor_types)
            raise ValueError(
                f"{type(self).__name__} trains only {trains}, but the model (model._target_) is "
                f"{type(model).__name__}: choose the model that goes with the method (model=hrda ↔ uda=hrda)"
            )
        self.model = model

    def forward(
        self, batch: dict[str, torch.Tensor], step: int, backward: Backward
    ) -> dict[str, torch.Tensor]:
        """One training step: each of ``loss_names`` handed to ``backward``; returns the logged scalars."""
        raise NotImplementedError

    def step_state(self) -> list[torch.Tensor]:
        """The tensors a step's forward changes besides the optimiser's parameters (BatchNorm statistics,
        counters): the engine restores them where it skips a step for a non-finite loss or gradient, so that
        a skipped step leaves no trace (state updated once per step, an EMA teacher, goes to ``end_step``)."""
        return list(self.buffers())

    def end_step(self, skipped: torch.Tensor) -> None:
        """Called by the engine after the step's backward passes, before the optimiser's update, with the
        device flag that is 1 where the step is skipped: state a method updates once per step (an EMA
        teacher) is committed here, so that a skipped step needs no copy of it held across the step."""

    def inference_model(self) -> Segmentor:
        """The network that is evaluated and exported (the student, as in the official code). It must be a
        submodule of the method: checkpoints store its weights apart from the training state."""
        return self.model
