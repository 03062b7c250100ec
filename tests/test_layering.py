"""The import graph of refign's packages has no arrow running back up (docs/architecture.md#layers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import import_graph

# the documented layers; a package may import only packages of a strictly lower layer
LAYERS = {
    "refign": 1,  # the package root registers the resolvers on import
    "utils": 0,
    "models": 1,
    "data": 1,
    "alignment": 2,
    "engine": 2,
    "uda": 2,
    "drawing": 2,
    "inference": 3,
    "refine": 3,
    "build": 4,
    "task": 4,
    "assets": 5,
    "train": 5,
    "align_train": 5,
    "evaluate": 5,
    "predict": 5,
    "estimate": 5,
    "check_data": 5,
    "align": 5,
}


def test_every_package_has_a_documented_layer():
    assert set(import_graph.graph()) == set(LAYERS)


def test_imports_only_point_down():
    upward = [
        f"{src} (layer {LAYERS[src]}) imports {dst} (layer {LAYERS[dst]})"
        for src, deps in import_graph.graph().items()
        for dst in deps
        if LAYERS[dst] >= LAYERS[src]
    ]
    assert upward == []


@pytest.mark.parametrize(
    "package,forbidden",
    [
        ("data", {"engine", "alignment", "uda", "refine", "build"}),
        ("models", {"data", "engine", "alignment", "uda"}),
        ("engine", {"uda", "alignment", "refine", "build"}),  # method-agnostic
        ("alignment", {"uda", "refine", "engine", "build"}),
    ],
)
def test_lower_layers_do_not_know_the_upper_ones(package, forbidden):
    assert not import_graph.graph()[package] & forbidden


def test_a_cycle_is_reported_with_its_path():
    with pytest.raises(ValueError, match="import cycle: a -> b -> a"):
        import_graph.layers({"a": {"b"}, "b": {"a"}})


def test_imports_are_read_from_source_including_from_refign_import():
    entry = import_graph.ROOT / "train.py"  # ``from refign import build`` at the top
    assert "refign.build" in import_graph.imports_of(entry)
    assert "build" in import_graph.graph()["train"]


def test_the_matcher_does_not_import_its_training_pipeline():
    """Refign runs the matcher; the warp-consistency pairs, losses and training step stay in
    ``alignment/training/`` and nothing else in ``alignment/`` reaches into it."""
    root = Path(__file__).parents[1] / "refign" / "alignment"
    sources = {path.name: path.read_text() for path in root.glob("*.py")}
    offenders = [
        name
        for name, text in sources.items()
        if "refign.alignment.training" in text or "from .training" in text
    ]
    assert offenders == []
    assert {p.stem for p in (root / "training").glob("*.py")} >= {
        "pairs",
        "synthetic_warps",
        "losses",
        "method",
    }
