"""The weights shipped for the synthetic benchmark are the recorded files and still score what was recorded
(``refign/assets/manifest.json``, written by ``scripts/make_synthetic_assets.py``)."""

from __future__ import annotations

import hashlib
import json

import pytest

from refign.assets.scores import ASSETS, MANIFEST, matcher_scores, segmentor_scores

MANIFEST_DATA = json.loads(MANIFEST.read_text())


@pytest.mark.parametrize("name", ["segmentor", "matcher"])
def test_shipped_file_is_the_recorded_one_and_small(name):
    entry = MANIFEST_DATA[name]
    data = (ASSETS / entry["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    total = sum((ASSETS / e["file"]).stat().st_size for e in MANIFEST_DATA.values())
    assert total <= 25 * 2**20  # both files together, as docs/synthetic.md#shipped-weights promises


def test_shipped_segmentor_scores_what_was_recorded(tmp_path_factory):
    cache = str(tmp_path_factory.getbasetemp() / "synthetic_cache")
    scores = segmentor_scores(ASSETS / MANIFEST_DATA["segmentor"]["file"], cache)
    for key, recorded in MANIFEST_DATA["segmentor"]["scores"].items():
        assert scores[key] == pytest.approx(recorded, abs=0.3), key
    # a pretrained start: far above chance on the source, and the domain gap the UDA methods close
    assert scores["source_val_mIoU"] > 50 > 25 > scores["target_val_mIoU"]


def test_shipped_matcher_scores_what_was_recorded_and_beats_the_identity(tmp_path_factory):
    cache = str(tmp_path_factory.getbasetemp() / "synthetic_cache")
    path = ASSETS / MANIFEST_DATA["matcher"]["file"]
    scores = matcher_scores(path, cache)
    recorded = MANIFEST_DATA["matcher"]["scores"]
    for key in ("pck1", "pck3", "pck5", "aepe", "night/pck5", "fog/pck5", "certain50_epe_ratio"):
        assert scores[key] == pytest.approx(recorded[key], abs=0.3), key
    # an informative certainty: the 50 % most certain pixels have at most half the mean error of all pixels
    assert scores["certain50_epe_ratio"] <= 0.5
    assert (
        scores["spearman_cert_epe"] < 0
    )  # the more certain a pixel, the smaller its error (recorded: -0.745)
    assert scores["pck5"] > scores["identity_pck5"] + 30
