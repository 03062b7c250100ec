import pytest
import torch
import torch.nn.functional as F

from refign.models.heads.segformer import SegFormerHead
from refign.models.hrda import HRDASegmentor, random_crop_box
from refign.models.segmentor import Segmentor, slide_windows
from refign.uda.dacs import DACS
from refign.uda.hrda import HRDA
from tests.uda.conftest import (
    NUM_CLASSES,
    TinyBackbone,
    TinyHead,
    engine_step,
    tiny_segmentor,
    toy_batch,
    uda_kwargs,
)


def hrda_model(**kw) -> HRDASegmentor:
    return HRDASegmentor(TinyBackbone(), TinyHead(), NUM_CLASSES, 4, 16, 0.1, **kw)


def test_crop_boxes_are_stride_aligned():
    seen = {random_crop_box((64, 96), (32, 48), 8) for _ in range(2000)}
    ys = {b[0] for b in seen}
    xs = {b[2] for b in seen}
    assert ys == {0, 8, 16, 24} and xs == {0, 8, 16, 24, 32, 40}  # (margin + 1) // 8 positions
    assert all(b[1] - b[0] == 32 and b[3] - b[2] == 48 for b in seen)
    assert random_crop_box((32, 32), (32, 32), 8) == (0, 32, 0, 32)


def views(model, x, boxes):
    """Context and detail predictions computed separately (eval mode: BN is batch-independent)."""
    lr_x = F.interpolate(x, size=(x.shape[2] // 2, x.shape[3] // 2), mode="bilinear", align_corners=False)
    lr_feats = model.backbone(lr_x)
    att = torch.sigmoid(model.scale_attention(lr_feats))
    hr = [model.head(model.backbone(x[:, :, y1:y2, x1:x2])) for y1, y2, x1, x2 in boxes]
    return att, model.head(lr_feats), hr


def up(t, size):
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)


def test_training_fusion_equals_manual_fusion():
    model = hrda_model().eval()
    x = torch.randn(2, 3, 64, 64)
    box = (16, 48, 8, 40)
    out = model.forward_train(x, box)
    att, lr_seg, (hr_seg,) = views(model, x, [box])
    # attention only on context cells (stride 8 in input pixels) whose origin lies inside the box
    inside = torch.tensor([[16 <= 8 * i < 48 and 8 <= 8 * j < 40 for j in range(8)] for i in range(8)])
    att = att * inside.float()
    canvas = F.pad(hr_seg, (8 // 4, 16 - 40 // 4, 16 // 4, 16 - 48 // 4))
    expected = up(att, (16, 16)) * canvas + up((1 - att) * lr_seg, (16, 16))
    torch.testing.assert_close(out.fused, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.hr_logits, up(hr_seg, (32, 32)), atol=1e-5, rtol=1e-4)
    assert out.box == box and out.lr_feats[0].shape[-1] == 8


def test_inference_fusion_averages_tiles():
    model = hrda_model().eval()
    x = torch.randn(1, 3, 64, 64)
    boxes = [(y, y + 32, xx, xx + 32) for y in (0, 16, 32) for xx in (0, 16, 32)]
    att, lr_seg, hr = views(model, x, boxes)
    total, count = torch.zeros(1, NUM_CLASSES, 16, 16), torch.zeros(1, 1, 16, 16)
    for (y1, _, x1, _), seg in zip(boxes, hr, strict=True):
        pad = (x1 // 4, 8 - x1 // 4, y1 // 4, 8 - y1 // 4)
        total += F.pad(seg, pad)
        count += F.pad(torch.ones(1, 1, 8, 8), pad)
    expected = up(att, (16, 16)) * total / count + up((1 - att) * lr_seg, (16, 16))
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-4)


def test_slide_equals_whole_when_one_window_covers():
    model = hrda_model(inference="slide", crop_size=(64, 96), stride=(32, 32)).eval()
    x = torch.randn(1, 3, 64, 96)
    torch.testing.assert_close(model.predict(x), model.whole_inference(x))


@pytest.mark.parametrize("size,crop,stride", [((64, 96), (32, 32), (16, 16)), ((50, 70), (24, 32), (10, 25))])
def test_tiles_cover_every_pixel(size, crop, stride):
    count = torch.zeros(size)
    for y1, y2, x1, x2 in slide_windows(size, crop, stride):
        assert 0 <= y1 < y2 <= size[0] and 0 <= x1 < x2 <= size[1] and (y2 - y1, x2 - x1) == crop
        count[y1:y2, x1:x2] += 1
    assert count.min() >= 1
    # a pointwise model is translation-equivariant: tiled inference must equal whole inference
    point = Segmentor(torch.nn.Identity(), torch.nn.Conv2d(3, 4, 1), "slide", crop, stride)
    x = torch.randn(1, 3, *size)
    torch.testing.assert_close(point.predict(x), point.whole_inference(x), atol=1e-5, rtol=1e-5)


def test_scale_attention_state_dict_names():
    keys = set(SegFormerHead([8, 8, 8, 8], 5, 16, 0.1).state_dict())
    assert {"linear_c1.proj.weight", "linear_c4.proj.bias", "linear_fuse.conv.weight"} <= keys
    assert {"linear_fuse.bn.running_mean", "linear_pred.weight", "linear_pred.bias"} <= keys


def test_hrda_step_and_loss_weighting(monkeypatch):
    method = HRDA(hrda_model(), **uda_kwargs("hrda", crop_size=[64, 64])).train()
    out = engine_step(method, toy_batch(), step=0)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in out.values())
    # the student loss is 0.9·CE(fused) + 0.1·CE(detail crop)
    method.eval()
    batch = toy_batch()
    x, y = batch["image_src"], batch["semantic_src"]
    box = (8, 40, 24, 56)
    monkeypatch.setattr("refign.models.hrda.random_crop_box", lambda *a: box)
    loss, feats = method.segmentation_loss(x, y)
    ref = method.model.forward_train(x, box)
    fused = F.cross_entropy(up(ref.fused, (64, 64)), y)
    detail = F.cross_entropy(ref.hr_logits, y[:, 8:40, 24:56])
    torch.testing.assert_close(loss, 0.9 * fused + 0.1 * detail)
    assert feats[-1].shape[-1] == 1  # context features (32 px input at stride 32)


def test_bad_hrda_inputs_fail_at_start_up():
    kwargs = uda_kwargs("hrda")
    with pytest.raises(ValueError, match="not divisible"):
        HRDA(hrda_model(), **{**kwargs, "crop_size": [60, 64]})
    with pytest.raises(ValueError, match="larger than the image"):
        HRDA(hrda_model(hr_crop_size=(128, 128)), **{**kwargs, "crop_size": [64, 64]})
    with pytest.raises(ValueError, match="HRDA trains only HRDASegmentor, but the model .* is Segmentor"):
        HRDA(tiny_segmentor(), **{**kwargs, "crop_size": [64, 64]})
    with pytest.raises(ValueError, match="DACS trains only Segmentor, but the model .* is HRDASegmentor"):
        DACS(hrda_model(), **uda_kwargs("dacs"))

    class Stride8Head(TinyHead):
        def forward(self, feats):
            return self.conv_seg(feats[1])

    with pytest.raises(ValueError, match="cannot be combined"):
        HRDASegmentor(TinyBackbone(), Stride8Head(), NUM_CLASSES, 4, 16, 0.1)
