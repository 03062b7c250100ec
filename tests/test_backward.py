"""One backward per loss (``refign.engine.backward``): a step holds one pass's activations at a time, and a
method cannot keep a pass alive by returning its loss, nor deliver its losses out of the declared order."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from refign.estimate.memory import LiveMemory
from tests.methods import SummedBackward
from tests.test_trainer import make_step

SIZES = {"a": 2**14, "b": 2**13}  # elements of each pass's input: the passes' activations differ in size
DEPTH = 8  # tanh layers per pass, each keeping its output (one input's size) for the backward


class TwoPasses(nn.Module):
    """Pass ``a`` and pass ``b``: ``DEPTH`` tanh layers on the input times one scalar weight, the losses
    delivered as ``loss_names`` says (``returned`` hands ``b`` back instead)."""

    def __init__(self, loss_names: tuple[str, ...] = ("a", "b"), returned: bool = False) -> None:
        super().__init__()
        self.net = nn.Linear(1, 1, bias=False)
        self.loss_names, self.returned = loss_names, returned

    def forward(self, batch: dict[str, torch.Tensor], step: int, backward) -> dict[str, torch.Tensor]:
        out = {}
        for name in ("a", "b"):
            if name in self.loss_names or (self.returned and name == "b"):
                h = self.net.weight * batch[name]
                for _ in range(DEPTH):
                    h = torch.tanh(h)
                loss = h.mean()
                if name in self.loss_names:
                    backward(name, loss)
                else:
                    out[name] = loss
        return out

    def inference_model(self) -> nn.Module:
        return self.net


def step_peak(method: nn.Module, summed: bool = False) -> int:
    """Bytes live at the peak of one training step over those live before it (parameters, batch)."""
    step = make_step(method)
    if summed:
        step.loss_backward = SummedBackward
    batch = {name: torch.linspace(-1, 1, n) for name, n in SIZES.items()}
    memory = LiveMemory()
    memory.track([*method.parameters(), *batch.values()], "before")
    with memory:
        memory.reset_peak()
        before = memory.current
        step(batch, 0)
    return memory.peak - before


def test_a_step_holds_the_larger_pass_not_the_sum_of_both():
    """The peak of a two-pass step is that of its larger pass alone (give or take the gradient's and the
    losses' few bytes); summed into one backward, as before, the smaller pass's activations stack on it."""
    alone = {name: step_peak(TwoPasses((name,))) for name in SIZES}
    both = step_peak(TwoPasses())
    summed = step_peak(TwoPasses(), summed=True)
    kept = {name: 4 * n * DEPTH for name, n in SIZES.items()}  # each pass's activations at its forward's end
    assert max(alone.values()) >= kept["a"] > kept["b"]
    assert abs(both - max(alone.values())) < 256, (both, alone)
    assert summed >= max(alone.values()) + kept["b"] // 2, (summed, alone, kept)


def test_a_returned_loss_is_refused():
    """A loss returned instead of handed over would keep its pass alive: the step fails, naming it."""
    step = make_step(TwoPasses(("a",), returned=True))
    batch = {name: torch.ones(4) for name in SIZES}
    with pytest.raises(RuntimeError, match="TwoPasses returned 'b', a tensor that requires grad"):
        step(batch, 0)


@pytest.mark.parametrize(
    "declared,message",
    [
        (("b", "a"), r"delivered the loss 'a' where its loss_names \['b', 'a'\] expect 'b' next"),
        (("a", "b", "c"), r"did not deliver its loss\(es\) \['c'\]"),
    ],
)
def test_losses_are_delivered_as_declared(declared, message):
    method = TwoPasses()
    method.loss_names = declared  # declared otherwise than the forward delivers
    with pytest.raises(RuntimeError, match=message):
        make_step(method)({name: torch.ones(4) for name in SIZES}, 0)


def test_the_last_loss_cannot_keep_its_graph():
    """The last loss is back-propagated by the engine after the forward, with nothing left to use its graph."""

    class Retaining(TwoPasses):
        def forward(self, batch, step, backward):
            backward("a", self.net.weight.sum(), retain_graph=True)
            return {}

    with pytest.raises(ValueError, match="Retaining's last loss 'a' cannot keep its graph"):
        make_step(Retaining(("a",)))({}, 0)
