"""Sweep folder names: the overrides, in characters a path override can hold, cut with a hash when they would
make too long a name."""

from __future__ import annotations

from hydra.core.override_parser.overrides_parser import OverridesParser

from refign.utils.resolvers import MAX_DIRNAME, short_dirname


def test_short_override_lists_name_the_folder_as_they_are():
    assert short_dirname("seed=1,uda=dacs") == "seed-1_uda-dacs"


def test_a_sweep_point_folder_can_be_passed_as_an_override_unquoted():
    """``refign.evaluate checkpoint=<sweep>/<point>/checkpoints/last.pt`` as typed: no grammar character."""
    name = "15_" + short_dirname("+ablation=row6,dataset.train_target.load_keys=[image,image_ref],seed=0")
    path = f"outputs/ablation/multirun/2026-12-04_22-22-20/{name}/checkpoints/last.pt"
    assert OverridesParser.create().parse_override(f"checkpoint={path}").value() == path


def test_long_override_lists_are_cut_to_valid_distinct_names():
    a = ",".join(f"dataset.val.node{i}.num_images={i}" for i in range(20))
    b = a.replace("num_images=19", "num_images=18")  # differs only after the cut
    assert (
        short_dirname(a)[:MAX_DIRNAME]
        == short_dirname(b)[:MAX_DIRNAME]
        == a.replace("=", "-").replace(",", "_")[:MAX_DIRNAME]
    )
    assert short_dirname(a) != short_dirname(b)
    assert len(short_dirname(a).encode()) < 255 - len("999_")
