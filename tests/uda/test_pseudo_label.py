import torch

from refign.uda.pseudo_label import TeacherSoftmax, confidence_weight
from tests.uda.conftest import tiny_segmentor


def test_weight_is_confident_fraction():
    probs = torch.softmax(4 * torch.randn(3, 5, 10, 12), dim=1)
    label, weight = confidence_weight(probs, 0.968)
    expected = sum(
        float(probs[b, :, i, j].max()) >= 0.968 for b in range(3) for i in range(10) for j in range(12)
    ) / (3 * 10 * 12)
    assert 0 < expected < 1
    torch.testing.assert_close(weight, torch.full_like(weight, expected))
    assert torch.equal(label, probs.argmax(1))


def test_ignore_rows():
    probs = torch.softmax(torch.randn(2, 5, 10, 12), dim=1)
    _, weight = confidence_weight(probs, 0.0, ignore_top=2, ignore_bottom=3)
    assert torch.all(weight[:, :2] == 0) and torch.all(weight[:, -3:] == 0)
    assert torch.all(weight[:, 2:-3] == 1)


def test_teacher_softmax_labeler():
    teacher = tiny_segmentor().eval()
    batch = {"image_trg": torch.randn(2, 3, 32, 32)}
    labels = TeacherSoftmax()(teacher, batch)
    images, probs = labels.images, labels.probs
    assert images is batch["image_trg"]
    assert probs.shape == (2, 5, 32, 32)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 32, 32))
