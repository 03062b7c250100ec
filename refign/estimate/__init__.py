"""The memory and FLOP estimate of a training step without a GPU (``python -m refign.estimate``,
docs/estimate.md): ``trace`` runs the step on fake tensors, ``memory`` counts live storages, ``flops`` the
FLOPs by part, ``autocast`` applies CUDA's autocast policy to the CPU trace, ``report`` prints the result."""
