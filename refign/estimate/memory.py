"""The bytes of live tensor storages while a step runs, their peak and what it was made of (docs/estimate.md).

A ``TorchDispatchMode`` sees every tensor an operator returns, forward, backward and optimiser alike. Each
storage is counted once, when it is first seen (views and in-place results share it), and uncounted when
it is freed (a weak-reference finaliser). Unlike ``torch.distributed._tools.mem_tracker.MemTracker`` it
needs no hook on parameters' gradients, so frozen networks (EMA teacher, ImageNet copy, matcher) are
simply counted. With fake tensors (``FakeTensorMode``) nothing is computed: the sizes are those the real
step would allocate, before any allocator rounding or caching.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakIdKeyDictionary


@dataclass
class _Storage:
    nbytes: int
    category: str
    born: int  # the event clock at allocation
    died: int | None = None


class LiveMemory(TorchDispatchMode):
    """Counts live storage bytes; ``phase`` names what new storages are counted as until it changes.

    ``assign`` re-labels storages once their role is known (the gradients after the backward, the
    optimiser's moments after its step); ``breakdown`` gives the bytes per label of the storages alive at
    the peak since the last ``reset_peak``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.phase = "activations"
        self.current = 0
        self.peak = 0
        self._clock = 0
        self._peak_at = 0
        self._storages: list[_Storage] = []
        self._index = WeakIdKeyDictionary()

    def track(self, tensors: Iterable[torch.Tensor], category: str) -> None:
        """Count tensors that exist before the traced code runs (parameters, buffers, the batch)."""
        for t in tensors:
            self._see(t, category)

    def assign(self, tensors: Iterable[torch.Tensor], category: str) -> None:
        """Label the storages of ``tensors`` as ``category`` (counting any not seen yet)."""
        for t in tensors:
            self._storages[self._see(t, category)].category = category

    def _see(self, t: torch.Tensor, category: str) -> int:
        storage = t.untyped_storage()
        index = self._index.get(storage)
        if index is not None:
            return index
        index = len(self._storages)
        self._clock += 1
        self._storages.append(_Storage(storage.nbytes(), category, self._clock))
        self._index[storage] = index
        weakref.finalize(storage, self._free, index)
        self.current += storage.nbytes()
        if self.current > self.peak:
            self.peak, self._peak_at = self.current, self._clock
        return index

    def _free(self, index: int) -> None:
        record = self._storages[index]
        self._clock += 1
        record.died = self._clock
        self.current -= record.nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._see(t, self.phase)
        return out

    def reset_peak(self) -> None:
        """Start a new peak from the bytes live now (e.g. at the start of the step that is reported)."""
        self.peak, self._peak_at = self.current, self._clock

    def breakdown(self) -> dict[str, int]:
        """Bytes per category of the storages alive at the peak."""
        at = self._peak_at
        alive = Counter()
        for s in self._storages:
            if s.born <= at and (s.died is None or s.died > at):
                alive[s.category] += s.nbytes
        return dict(alive)


@contextlib.contextmanager
def phase_hooks(memory: LiveMemory, optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Label what the optimiser step finds and makes: the gradients it reads, the state it keeps."""

    def before(opt, *_):
        memory.phase = "temporaries"
        memory.assign(
            [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None], "gradients"
        )

    def after(opt, *_):
        memory.assign([t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)], "optimizer")
        memory.phase = "activations"

    with (
        optimizer.register_step_pre_hook(before),
        optimizer.register_step_post_hook(after),
    ):  # removed on exit
        yield
