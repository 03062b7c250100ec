"""Evaluation and prediction (``refign.evaluate``, ``refign.predict``): the inference network of a training
checkpoint, loaded strictly, and the scale its pictures are brought to."""

from __future__ import annotations

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict

from refign.build.segmentation import build_segmentor
from refign.engine import checkpoint
from refign.models.segmentor import Segmentor
from refign.models.weights import load_strict
from refign.utils.errors import ConfigError

MODEL_NODES = ("backbone", "head", "model")


def build_inference_model(cfg: DictConfig) -> Segmentor:
    """The inference network of a training checkpoint: only the segmentor is rebuilt (no method, no matcher)
    and its weights are loaded strictly."""
    return _inference_model(cfg, checkpoint.load(cfg.checkpoint))


def build_predictor(cfg: DictConfig) -> tuple[Segmentor, int]:
    """The inference network and the short side its pictures are brought to (``refign.predict input=…``):
    ``cfg.short_side`` when set, else that of the target images the checkpoint's own configuration
    evaluates on (this composition's when the checkpoint stores none or ``use_checkpoint_config=false``)."""
    state = checkpoint.load(cfg.checkpoint)
    stored = OmegaConf.create(state["config"]) if cfg.use_checkpoint_config and state.get("config") else cfg
    return _inference_model(cfg, state), int(cfg.get("short_side") or evaluation_short_side(stored.dataset))


def evaluation_short_side(dataset: DictConfig) -> int:
    """The short side of the images a configuration evaluates on: its first test set's ``dims`` (540 for
    DAFormer's 540×960 ACDC), else that set's native size (HRDA*'s 1080, the synthetic benchmark's
    ``size``) — how the datasets scale target images at test time."""
    node = next(iter((dataset.get("test") or dataset.get("val") or {None: None}).values()))
    if node is None:
        raise ConfigError(
            f"dataset {dataset.get('name')!r} has no test or val set to take the scale from: set short_side"
        )
    dims = node.get("dims") or node.get("size") or get_class(node._target_).orig_dims
    return int(min(dims))


def _inference_model(cfg: DictConfig, state: dict) -> Segmentor:
    weights = checkpoint.segmentor_state(state, str(cfg.checkpoint))
    if cfg.use_checkpoint_config and state.get("config"):
        stored = OmegaConf.create(state["config"])
        with open_dict(cfg):
            for node in MODEL_NODES:
                cfg[node] = stored[node]
            # checkpoints from before model.slide_batch: their batched_slide=true ran every window in one
            # pass; they now get the default (docs/performance.md#eval-memory), the logits are the same
            cfg.model.pop("batched_slide", None)
            cfg.dataset.num_classes = stored.dataset.num_classes
    with open_dict(cfg):  # every weight comes from the checkpoint: do not read the initialisation files
        cfg.backbone.pretrained = None
        cfg.init_weights = None
    model = build_segmentor(cfg)
    load_strict(model, weights, str(cfg.checkpoint))
    return model
