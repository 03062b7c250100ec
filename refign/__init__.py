"""Refign: align and refine for UDA semantic segmentation."""

from refign.utils import resolvers

# Once for every entry point (``python -m refign.X`` imports this package first): Hydra resolves the sweep
# folder names (conf/hydra/default.yaml) before any entry point's code runs.
resolvers.register()
