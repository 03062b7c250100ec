"""The evaluation's memory is bounded (issue 21; docs/performance.md#eval-memory): sliding windows run
``model.slide_batch`` at a time with the same logits, and the evaluation's data workers do not carry the
memory of the process that evaluates (a trainer holding gigabytes)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from refign.engine.dist import DistInfo
from refign.engine.evaluator import evaluate
from refign.models.hrda import HRDASegmentor
from tests.uda.conftest import NUM_CLASSES, TinyBackbone, TinyHead


def hrda(slide_batch: int | None) -> HRDASegmentor:
    torch.manual_seed(0)
    model = HRDASegmentor(
        TinyBackbone(), TinyHead(), NUM_CLASSES, 4, 16, 0.1,
        inference="slide", crop_size=(64, 64), stride=(32, 32), slide_batch=slide_batch,
    )  # fmt: skip
    return model.eval()


def test_windows_run_slide_batch_at_a_time_with_the_same_logits():
    x = torch.randn(2, 3, 64, 128)  # 3 windows of 64² per image; HRDA: context + 9 detail crops each
    passes = {}
    for slide_batch in (None, 1, 2):
        model = hrda(slide_batch)
        sizes = []
        model.backbone.register_forward_hook(lambda _m, args, _o, sizes=sizes: sizes.append(args[0].shape[0]))
        with torch.no_grad():
            passes[slide_batch] = (model.predict(x), sizes)
    # images per backbone pass: (windows in the pass) × 2 images × (context + 9 detail crops)
    assert passes[None][1] == [3 * 2 * 10] and passes[1][1] == [20, 20, 20] and passes[2][1] == [40, 20]
    for slide_batch in (1, 2):
        torch.testing.assert_close(passes[slide_batch][0], passes[None][0], atol=1e-5, rtol=1e-5)


class WorkerRSS(Dataset):
    """Images filled with the resident memory (MiB) of the process that loads them."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> dict:
        with open("/proc/self/status") as f:
            rss_mib = next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS"))
        return {
            "image": torch.full((3, 4, 4), float(rss_mib)),
            "semantic": torch.zeros(4, 4, dtype=torch.long),
        }


class Recorder(torch.nn.Module):
    """Predicts class 0 everywhere and keeps the first pixel of every image it is shown."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[float] = []

    def predict(self, image: torch.Tensor, out_size) -> torch.Tensor:
        self.seen += image[:, 0, 0, 0].tolist()
        return torch.zeros(image.shape[0], 2, *out_size)


def test_evaluation_workers_do_not_inherit_the_evaluating_process():
    held = torch.ones(2**28)  # 1 GiB resident here, as a trainer holds its networks and optimiser
    model = Recorder()
    result = evaluate(model, WorkerRSS(), DistInfo(0, 1, 0, torch.device("cpu")), 2, num_workers=1)
    assert result["mIoU"] == 50.0 and held[-1] == 1  # class 0 everywhere: IoU 100 for it, 0 for class 1
    own_mib = WorkerRSS()[0]["image"][0, 0, 0].item()
    assert len(model.seen) == 2 and own_mib > 1024
    assert max(model.seen) < own_mib - 700  # a forked worker would map (and count) the 1 GiB held here
