"""refine() against an independent NumPy implementation of docs/refign.md#refine and the official worked example."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from refign.refine.refiner import LARGE_STATIC_CLASSES, large_static_mask, refine

STATIC = set(LARGE_STATIC_CLASSES)


def numpy_refine(lt, lr, valid, cert, gamma, disable_m):
    """Loop-level re-statement of the formulas, one pixel at a time."""

    def softmax(x):
        e = np.exp(x - x.max(0))
        return e / e.sum(0)

    b, c, h, w = lt.shape
    out = np.zeros_like(lt)
    for i in range(b):
        pt, pr = softmax(lt[i]), softmax(lr[i])
        eta = -(pt * np.log(pt)).sum(0) / np.log(c)
        s = eta.mean() ** gamma
        for y in range(h):
            for x in range(w):
                both = pt[:, y, x].argmax() in STATIC and pr[:, y, x].argmax() in STATIC
                for k in range(c):
                    m = 1.0 if (both and k in STATIC and not disable_m) else 0.0
                    p = 0.5 if cert is None else cert[i, 0, y, x]
                    e = s * max(p, m)
                    if valid is not None and not valid[i, y, x]:
                        e = 0.0
                    out[i, k, y, x] = (1 - e) * pt[k, y, x] + e * pr[k, y, x]
    return out


@pytest.mark.parametrize(
    "gamma,disable_m,use_cert,use_mask",
    [(0.25, False, True, True), (0.0, True, False, True), (0.25, False, False, False)],
)
def test_refine_matches_independent_computation(gamma, disable_m, use_cert, use_mask):
    g = torch.Generator().manual_seed(0)
    lt, lr = torch.randn(2, 19, 5, 6, generator=g) * 3, torch.randn(2, 19, 5, 6, generator=g) * 3
    lr[:, 0] += 4  # make "road" win often so that M is exercised
    lt[:, 0, :3] += 4
    cert = torch.rand(2, 1, 5, 6, generator=g) if use_cert else None
    valid = torch.rand(2, 5, 6, generator=g) > 0.3 if use_mask else None
    got = refine(lt, lr, valid, cert, gamma=gamma, disable_m=disable_m)
    want = numpy_refine(
        lt.double().numpy(),
        lr.double().numpy(),
        None if valid is None else valid.numpy(),
        None if cert is None else cert.double().numpy(),
        gamma,
        disable_m,
    )
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


def test_invalid_warp_everywhere_returns_the_unrefined_softmax():
    lt, lr = torch.randn(1, 19, 4, 4), torch.randn(1, 19, 4, 4)
    out = refine(lt, lr, torch.zeros(1, 4, 4, dtype=torch.bool), torch.rand(1, 1, 4, 4))
    torch.testing.assert_close(out, torch.softmax(lt, 1))


def test_m_touches_only_the_large_static_channels():
    pred = torch.zeros(1, 3, 3, dtype=torch.long)  # road everywhere in both predictions
    m = large_static_mask(pred, pred, 19)
    assert m[0, list(LARGE_STATIC_CLASSES)].eq(1).all()
    others = [c for c in range(19) if c not in STATIC]
    assert m[0, others].eq(0).all()
    car = torch.full((1, 3, 3), 13)
    assert large_static_mask(pred, car, 19).sum() == 0


def test_disable_p_means_certainty_one_half():
    lt, lr = torch.randn(1, 19, 4, 4), torch.randn(1, 19, 4, 4)
    a = refine(lt, lr, None, None, gamma=0.0, disable_m=True)
    pt, pr = torch.softmax(lt, 1), torch.softmax(lr, 1)
    torch.testing.assert_close(a, 0.5 * pt + 0.5 * pr)


def test_identical_predictions_keep_their_argmax():
    logits = torch.randn(2, 19, 6, 6)
    out = refine(logits, logits.clone(), None, torch.ones(2, 1, 6, 6))
    assert torch.equal(out.argmax(1), logits.argmax(1))


def test_worked_example_of_the_spec_with_three_classes():
    """The official worked example, with class 0 large-static and C = 3 (the mask is computed for those ids)."""
    lt = torch.tensor([[2.0, 0.5], [1.0, 0.0], [0.0, 1.0]]).reshape(1, 3, 1, 2)
    lr = torch.tensor([[3.0, 0.0], [0.0, 0.0], [0.0, 2.0]]).reshape(1, 3, 1, 2)
    cert = torch.tensor([0.6, 0.9]).reshape(1, 1, 1, 2)
    out = refine(lt, lr, None, cert, gamma=0.25, static_classes=(0,))
    np.testing.assert_allclose(out[0, :, 0, 0].numpy(), [0.8992, 0.1301, 0.0643], atol=2e-4)
    np.testing.assert_allclose(out[0, :, 0, 1].numpy(), [0.1341, 0.1175, 0.7484], atol=2e-4)
