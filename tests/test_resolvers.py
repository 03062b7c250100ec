"""Sweep folder names: the overrides as given, or cut with a hash when they would make too long a name."""

from __future__ import annotations

from refign.resolvers import MAX_DIRNAME, short_dirname


def test_short_override_lists_name_the_folder_as_they_are():
    assert short_dirname("seed=1,uda=dacs") == "seed=1,uda=dacs"


def test_long_override_lists_are_cut_to_valid_distinct_names():
    a = ",".join(f"dataset.val.node{i}.num_images={i}" for i in range(20))
    b = a.replace("num_images=19", "num_images=18")  # differs only after the cut
    assert short_dirname(a).startswith(a[:MAX_DIRNAME]) and short_dirname(b).startswith(a[:MAX_DIRNAME])
    assert short_dirname(a) != short_dirname(b)
    assert len(short_dirname(a).encode()) < 255 - len("999_")
