"""Segmenting one RGB picture of any size at the scale the model was trained for
(docs/tools.md#predict-files).

A network trained on 540×960 ACDC images sees objects at that scale; fed a 4K frame or a 360p phone clip as
it is, the predictions degrade (HRDA issue 47). So the picture is resized until its short side is that of the
images the checkpoint was evaluated on, and the logits are resized back before the argmax, the path
``refign.evaluate`` takes from a test image to its native-size label.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from refign.data.transforms import JointTransform

NORMALISE = JointTransform()  # the evaluation transform: ImageNet normalisation to a (3, H, W) tensor


def model_input(rgb: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """The picture resized to (H, W) (PIL bilinear, as ``refign.data.io.load_image`` resizes to a dataset's
    ``dims``) and normalised as the evaluation transform does: (3, H, W)."""
    if rgb.shape[:2] != tuple(size):
        rgb = np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.BILINEAR))
    return NORMALISE({"image": rgb})["image"]


@torch.no_grad()
def segment(
    model: torch.nn.Module, rgb: np.ndarray, short_side: int | None, device: torch.device
) -> np.ndarray:
    """Train ids (H, W) uint8 of an RGB uint8 picture, at the picture's own size."""
    h, w = rgb.shape[:2]
    s = short_side / min(h, w) if short_side else 1  # the short side brought to ``short_side``, aspect kept
    image = model_input(rgb, (max(1, round(h * s)), max(1, round(w * s))))
    logits = model.predict(image[None].to(device), out_size=(h, w))
    return logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
