"""The matcher's training pipeline (``python -m refign.align_train``), kept apart from the matcher itself.

Refign only runs a trained matcher (``refign.alignment.network`` and the modules it builds on); nothing
there imports this subpackage. Here: the warp-consistency pairs and their synthetic warps (``pairs``,
``synthetic_warps``), the losses (``losses``) and the training step as a method of the engine (``method``).
"""
