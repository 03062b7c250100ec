"""CUDA's autocast policy on a CPU trace (docs/estimate.md#mixed-precision: why it runs on CPU tensors).

CPU and CUDA autocast agree on what runs in 16 bits but not on what runs in fp32: CUDA casts the inputs of
softmax, norms, sums, exponentials, logarithms and powers to fp32, CPU autocast leaves them in the input's
dtype; CPU autocast runs reflection padding in fp32, CUDA in the input's dtype. The lists follow PyTorch's
"CUDA Ops that can autocast to float32" (docs: Automatic Mixed Precision package, autocast op reference).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

T = torch.Tensor
# CUDA autocast casts their floating inputs to fp32 (those these models call)
CUDA_FP32 = {
    *(F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, T.softmax, T.log_softmax),
    *(F.layer_norm, torch.layer_norm, F.group_norm, torch.group_norm, F.normalize),
    *(torch.norm, T.norm, torch.linalg.vector_norm),
    *(torch.sum, T.sum, torch.cumsum, T.cumsum, torch.prod, T.prod),
    *(torch.exp, T.exp, torch.log, T.log, torch.pow, T.pow, T.__pow__, T.__rpow__, T.__rtruediv__),
    *(torch.rsqrt, T.rsqrt, torch.reciprocal, T.reciprocal, F.softplus),
}
# CPU autocast runs them in fp32 (reflection padding), CUDA autocast in the input's dtype
CUDA_INPUT_DTYPE = {F.pad}
LOW = (torch.bfloat16, torch.float16)
_POLICED = CUDA_FP32 | CUDA_INPUT_DTYPE


class CudaAutocastPolicy(TorchFunctionMode):
    """While CPU autocast is on: ``CUDA_FP32`` functions run on fp32 copies of their 16-bit inputs, and
    ``CUDA_INPUT_DTYPE`` functions run outside autocast, both as under CUDA autocast."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not torch.is_autocast_enabled("cpu") or func not in _POLICED:
            return func(*args, **kwargs)
        if func in CUDA_FP32:
            args, kwargs = pytree.tree_map_only(
                torch.Tensor, lambda t: t.float() if t.dtype in LOW else t, (args, kwargs)
            )
        with torch.autocast("cpu", enabled=False):
            return func(*args, **kwargs)
