"""Mean-teacher self-training with ClassMix: DACS, and DAFormer's additions (feature distance; rare class
sampling lives on the data side, ``refign/data/rcs.py``)."""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from refign.data.classes import colorize
from refign.models.segmentor import Segmentor
from refign.uda.augment import strong_photometric
from refign.uda.base import Backward, UDAMethod
from refign.uda.ema import EMATeacher
from refign.uda.fdist import feature_distance, feature_distance_mask
from refign.uda.losses import pixel_weighted_ce
from refign.uda.mic import MaskedBatch, MaskedImageConsistency
from refign.uda.mix import class_masks, class_mix
from refign.uda.pseudo_label import PseudoLabeler, PseudoLabels, TeacherSoftmax, confidence_weight
from refign.utils.imaging import resize, to_rgb_uint8


class MixedBatch(NamedTuple):
    image: torch.Tensor  # mixed, strongly augmented images (B, 3, H, W)
    label: torch.Tensor  # mixed labels (B, H, W)
    weight: torch.Tensor  # pixel weights (B, H, W)
    confident_fraction: torch.Tensor  # q, logged
    target: torch.Tensor  # the target images that were pseudo-labelled
    pseudo_label: torch.Tensor  # the teacher's hard labels on them
    pseudo_weight: torch.Tensor  # and their pixel weights (B, H, W)
    # the pseudo-labeler's statistics and panel, which are logged; not its probabilities, which nothing after
    # the mixing reads (kept, they would stay alive through the mixed pass: B × C × H × W fp32)
    stats: dict
    panel: np.ndarray | None


def mix_panel(mixed: MixedBatch, masked: MaskedBatch | None = None) -> np.ndarray:
    """First sample: target | pseudo-label | mixed image | mixed label (| MIC's masked target | the label its
    loss uses, with ``mic=on``), as one (H, 4W or 6W, 3) uint8 image."""
    parts = [to_rgb_uint8(mixed.target[0]), colorize(mixed.pseudo_label[0].cpu().numpy())]
    parts += [to_rgb_uint8(mixed.image[0]), colorize(mixed.label[0].cpu().numpy())]
    if masked is not None:
        i = masked.target_index
        parts += [to_rgb_uint8(masked.image[i]), colorize(masked.label[i].cpu().numpy())]
    return np.concatenate(parts, axis=1)


class DACS(UDAMethod):
    """One step: EMA update → source CE (+ feature distance) → teacher pseudo-labels → ClassMix + strong
    augmentation → weighted CE on the mixed images (→ MIC's masked images), docs/self-training.md#training-step.
    Each loss is back-propagated as soon as it is computed, as in the official step, so each student pass is
    freed before the next one runs (docs/self-training.md#one-backward-per-loss).

    Args:
        model: the student segmentor.
        num_classes: number of classes (for the feature-distance label downscaling).
        ema_momentum: upper bound of the EMA momentum ramp.
        teacher_eval_mode: False = official (teacher dropout/DropPath active, docs/quirks.md#q1), True = intended.
        eval_teacher: evaluate the EMA teacher instead of the student (off by default, docs/deviations.md#d3).
        pseudo_label_threshold: confidence τ of the pseudo-label weight.
        psweight_ignore_top, psweight_ignore_bottom: rows of the weight map set to 0.
        color_jitter_s, color_jitter_p: jitter strength; jitter happens when a U(0,1) draw exceeds p.
        blur: Gaussian blur with probability 0.5, σ ~ U(blur_sigma).
        blur_sigma: range of σ.
        enable_fdist: DAFormer's feature distance to a frozen copy of the initial backbone.
        fdist_lambda: its weight.
        fdist_classes: classes whose cells enter the distance (None = all cells).
        fdist_scale_min_ratio: minimum purity of a cell's majority class.
        pseudo_labeler: how target probabilities are made (default: teacher softmax); Refign plugs in here.
        mic: Masked Image Consistency (``mic=on``): an extra loss on masked target images with the same
            pseudo-labels and weights; None = off.
    """

    self_training = True

    def __init__(
        self,
        model: Segmentor,
        num_classes: int,
        ema_momentum: float,
        teacher_eval_mode: bool,
        eval_teacher: bool,
        pseudo_label_threshold: float,
        psweight_ignore_top: int,
        psweight_ignore_bottom: int,
        color_jitter_s: float,
        color_jitter_p: float,
        blur: bool,
        blur_sigma: Sequence[float],
        enable_fdist: bool,
        fdist_lambda: float,
        fdist_classes: Sequence[int] | None,
        fdist_scale_min_ratio: float,
        pseudo_labeler: PseudoLabeler | None = None,
        mic: MaskedImageConsistency | None = None,
    ) -> None:
        super().__init__(model)
        self.num_classes = num_classes
        self.teacher = EMATeacher(model, ema_momentum, eval_mode=teacher_eval_mode)
        self.eval_teacher = eval_teacher
        self.threshold = pseudo_label_threshold
        self.ignore_top, self.ignore_bottom = psweight_ignore_top, psweight_ignore_bottom
        self.jitter_s, self.jitter_p = color_jitter_s, color_jitter_p
        self.blur, self.blur_sigma = blur, (float(blur_sigma[0]), float(blur_sigma[1]))
        self.pseudo_labeler = pseudo_labeler if pseudo_labeler is not None else TeacherSoftmax()
        self.mic = mic
        self.loss_names = (
            "src",
            *(["fdist"] if enable_fdist else []),
            "mix",
            *(["mic"] if mic is not None else []),
        )
        # A frozen copy of the *initial* (pretrained) backbone, taken before any update.
        self.imnet_backbone = copy.deepcopy(model.backbone).requires_grad_(False) if enable_fdist else None
        self.fdist_lambda = fdist_lambda
        self.fdist_classes = list(fdist_classes) if fdist_classes is not None else None
        self.fdist_min_ratio = fdist_scale_min_ratio
        # Steps whose feature distance had no qualifying cell (NaN officially, 0 here); saved for resumes.
        self.register_buffer("fdist_empty_steps", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> DACS:
        super().train(mode)
        if self.imnet_backbone is not None:
            self.imnet_backbone.eval()
        return self

    def end_step(self, skipped: torch.Tensor) -> None:
        """The EMA update of the step just run (the teacher it pseudo-labelled with), unless ``skipped``."""
        self.teacher.update(self.model, self.step_index, skipped)

    def inference_model(self) -> Segmentor:
        return self.teacher.model if self.eval_teacher else self.model

    # ---- pieces a subclass (HRDA) adapts ---------------------------------------------------------------
    def student_forward(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The student's logits at the input resolution and the backbone features (for the feature
        distance)."""
        feats = self.model.backbone(image)
        return resize(self.model.head(feats), image.shape[-2:]), feats

    def output_loss(
        self, logits: torch.Tensor, label: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The CE of ``student_forward``'s outputs against ``label`` (pixel weights ``weight``)."""
        return pixel_weighted_ce(resize(logits, label.shape[-2:]), label, weight)

    def segmentation_loss(
        self, image: torch.Tensor, label: torch.Tensor, weight: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Student CE on ``image`` and the backbone features it used (for the feature distance)."""
        outputs, feats = self.student_forward(image)
        return self.output_loss(outputs, label, weight), feats

    def imnet_input(self, image: torch.Tensor) -> torch.Tensor:
        """What the frozen backbone sees: the same input as the student features compared with it."""
        return image

    # ---- the step ----------------------------------------------------------------------------------------
    def fdist_loss(
        self, image: torch.Tensor, label: torch.Tensor, feats: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        with torch.no_grad():
            frozen = self.imnet_backbone(self.imnet_input(image))[-1]
        student = feats[-1]
        mask = None
        if self.fdist_classes is not None:
            mask = feature_distance_mask(
                label, student.shape[-2:], self.fdist_classes, self.fdist_min_ratio, self.num_classes
            )
        dist, defined = feature_distance(student, frozen, mask)
        self.fdist_empty_steps += (~defined).long()  # on the device: no host read per step
        return self.fdist_lambda * dist

    @torch.no_grad()
    def mixed_batch(self, batch: dict[str, torch.Tensor]) -> MixedBatch:
        """Teacher pseudo-labels on the target, ClassMix with the source, strong augmentation."""
        return self.mix(batch, self.pseudo_labeler(self.teacher.model, batch, want_panel=self.wants_images))

    @torch.no_grad()
    def mix(self, batch: dict[str, torch.Tensor], labels: PseudoLabels) -> MixedBatch:
        """ClassMix of the source with the pseudo-labelled target images, strong augmentation."""
        images_trg, probs = labels.images, labels.probs
        pseudo, weight = confidence_weight(probs, self.threshold, self.ignore_top, self.ignore_bottom)
        n = images_trg.shape[0]  # a larger source batch mixes only its first n images (docs/quirks.md#q13)
        image_src, label_src = batch["image_src"][:n], batch["semantic_src"][:n]
        masks = class_masks(label_src)
        image, label, pixel_weight = class_mix(masks, image_src, label_src, images_trg, pseudo, weight)
        # once per batch (docs/quirks.md#q9)
        jitter_draw, blur_draw = random.uniform(0, 1), random.uniform(0, 1)
        image = strong_photometric(
            image, jitter_draw, blur_draw, self.jitter_s, self.jitter_p, self.blur, self.blur_sigma
        )
        q = weight.amax()
        return MixedBatch(
            image, label, pixel_weight, q, images_trg, pseudo, weight, labels.stats, labels.panel
        )

    def source_losses(self, batch: dict[str, torch.Tensor], backward: Backward) -> None:
        """The source CE, back-propagated at once; with the feature distance, the source pass is kept
        (``retain_graph``) until the distance, which back-propagates through its backbone, is handed over
        too: the official order, and as long as the official code keeps it. The pass's tensors are freed on
        return, before the teacher and the mixed pass run."""
        image, label = batch["image_src"], batch["semantic_src"]
        loss, feats = self.segmentation_loss(image, label)
        backward("src", loss, retain_graph=self.imnet_backbone is not None)
        if self.imnet_backbone is not None:
            backward("fdist", self.fdist_loss(image, label, feats))

    def forward(
        self, batch: dict[str, torch.Tensor], step: int, backward: Backward
    ) -> dict[str, torch.Tensor]:
        # the official EMA update comes first; the student does not change before the optimiser's update, so
        # the teacher averages the same parameters where it pseudo-labels, and commits them in end_step
        self.step_index = step
        out: dict[str, torch.Tensor | float] = {}
        self.source_losses(batch, backward)
        if self.imnet_backbone is not None:
            out["fdist_empty_steps"] = self.fdist_empty_steps.detach().clone()  # read at log steps only
        with self.teacher.averaged(self.model, step) as alpha:
            mixed = self.mixed_batch(batch)
        out["ema_alpha"] = alpha
        out["pseudo_weight"] = mixed.confident_fraction
        out.update(mixed.stats)
        backward("mix", self.segmentation_loss(mixed.image, mixed.label, mixed.weight)[0])
        masked = None
        if self.mic is not None:  # --- MIC (mic=on, refign/uda/mic.py): last, after every other draw ---
            masked = self.mic.masked_batch(
                mixed.target,
                mixed.pseudo_label,
                mixed.pseudo_weight,
                batch["image_src"],
                batch["semantic_src"],
            )
            loss_mic, _ = self.segmentation_loss(masked.image, masked.label, masked.weight)
            backward("mic", self.mic.loss_weight * loss_mic)
        if self.wants_images:
            out["img/dacs"] = mix_panel(mixed, masked)
            if mixed.panel is not None:
                out["img/refign"] = mixed.panel
        return out
