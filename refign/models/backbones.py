"""Backbones reused from mmsegmentation, annotated with their output channels for the decode head."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from mmseg.models.backbones import MixVisionTransformer, ResNetV1c
from mmseg.models.utils import nlc_to_nchw
from torch import nn
from torch.overrides import _get_current_function_mode_stack
from torch.utils.checkpoint import checkpoint

from refign.models.weights import load_backbone_weights, load_strict, read_state_dict

# The official MiT (SegFormer; Refign's mix_transformer.py) builds its patch-embedding and spatial-reduction
# LayerNorms with PyTorch's default eps, and only the block and stage norms with 1e-6; mmseg uses 1e-6 for
# all of them. With 1e-6 there, converted official weights gave logits up to 3.8e-4 off.
OFFICIAL_EMBED_NORM_EPS = 1e-5


class FunctionModes:
    """Enters the given torch function modes each time it is entered."""

    def __init__(self, modes: list) -> None:
        self.modes = modes

    def __enter__(self) -> None:
        self.stack = contextlib.ExitStack()
        for mode in self.modes:
            self.stack.enter_context(mode)

    def __exit__(self, *exc) -> None:
        self.stack.close()


def forward_function_modes() -> tuple[contextlib.AbstractContextManager, FunctionModes]:
    """``checkpoint``'s ``context_fn``: a block's recomputation re-enters the torch function modes its forward
    ran under. It runs inside the backward, where none is active (torch restores only its device mode and
    autocast), so under such a mode it would compute otherwise than the forward did: ``refign.estimate``'s
    CUDA autocast policy on a CPU trace runs norms and softmaxes in fp32. A block of a retained graph is
    recomputed once per backward, hence a context that can be entered again."""
    return contextlib.nullcontext(), FunctionModes(_get_current_function_mode_stack())


class MiT(MixVisionTransformer):
    """mmseg's ``MixVisionTransformer`` made to compute as the official MiT: patch-embedding and
    spatial-reduction LayerNorms with eps 1e-5, and contiguous (not channels-last) output features, as the
    official ``reshape(...).permute(0, 3, 1, 2).contiguous()``. Parameter names are mmseg's.

    ``checkpoint_blocks``: each transformer block that is back-propagated through keeps only its input and
    is recomputed in the backward, by torch's non-reentrant checkpoint. mmseg's own switch (``with_cp``)
    calls the reentrant one, which PyTorch deprecates with a warning on every run. The switch is an
    attribute read by ``forward``, so a deep copy (the EMA teacher, the ImageNet copy) keeps it and
    checkpoints its own blocks; those run without gradients, where nothing is checkpointed.
    """

    def __init__(self, checkpoint_blocks: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.checkpoint_blocks = checkpoint_blocks
        for patch_embed, blocks, _ in self.layers:
            patch_embed.norm.eps = OFFICIAL_EMBED_NORM_EPS
            for block in blocks:
                if block.attn.sr_ratio > 1:
                    block.attn.norm.eps = OFFICIAL_EMBED_NORM_EPS

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """mmseg's ``MixVisionTransformer.forward``, each block checkpointed where switched on (and, as
        mmseg's ``with_cp``, where its input requires grad)."""
        outs = []
        for i, (patch_embed, blocks, norm) in enumerate(self.layers):
            x, hw_shape = patch_embed(x)
            for block in blocks:
                if self.checkpoint_blocks and x.requires_grad:
                    x = checkpoint(block, x, hw_shape, use_reentrant=False, context_fn=forward_function_modes)
                else:
                    x = block(x, hw_shape)
            x = nlc_to_nchw(norm(x), hw_shape)
            if i in self.out_indices:
                outs.append(x.contiguous())
        return outs


def mit(
    embed_dims: int,
    num_layers: Sequence[int],
    num_heads: Sequence[int],
    sr_ratios: Sequence[int],
    mlp_ratio: int,
    drop_path_rate: float,
    qkv_bias: bool = True,
    pretrained: str | None = None,
    checkpoint_activations: bool = False,
) -> nn.Module:
    """``MiT`` (SegFormer MiT-b0…b5 by the config's sizes), optionally pretrained.

    ``pretrained`` names a local file with MiT weights (mmseg key names, optionally under ``backbone.``).
    ``checkpoint_activations``: each transformer block keeps only its input for the backward and computes
    its forward again there (``MiT.checkpoint_blocks``; the random state is restored, so the numbers are
    those of a run without it): less activation memory for about a third more backbone compute. Only
    blocks that are back-propagated through are checkpointed (not the EMA teacher or the ImageNet copy).
    """
    model = MiT(
        embed_dims=embed_dims,
        num_layers=list(num_layers),
        num_heads=list(num_heads),
        sr_ratios=list(sr_ratios),
        mlp_ratio=mlp_ratio,
        drop_path_rate=drop_path_rate,
        qkv_bias=qkv_bias,
        out_indices=(0, 1, 2, 3),
        checkpoint_blocks=checkpoint_activations,
    )
    model.out_channels = [embed_dims * h for h in num_heads]
    if pretrained:
        load_backbone_weights(model, pretrained)
    return model


def resnet_v1c(
    depth: int,
    strides: Sequence[int],
    dilations: Sequence[int],
    pretrained: str | None = None,
) -> nn.Module:
    """mmseg ``ResNetV1c`` (deep stem) as in the DeepLabV2 configs, all four stages returned, BN trainable.

    ``pretrained`` names a local file with mmseg ResNet weights (e.g. ``resnet101_v1c``); ``fc.*`` is dropped.
    """
    model = ResNetV1c(
        depth=depth,
        strides=tuple(strides),
        dilations=tuple(dilations),
        out_indices=(0, 1, 2, 3),
        contract_dilation=False,
        norm_eval=False,
        style="pytorch",
    )
    model.out_channels = [64 * 4 * 2**i for i in range(4)]
    if pretrained:
        state = {k: v for k, v in read_state_dict(pretrained).items() if not k.startswith("fc.")}
        load_strict(model, state, pretrained)
    return model
