"""refign.predict input=…: the same labels at any input scale, the predictions refign.evaluate scores,
unreadable files skipped and counted, videos in and out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import ExifTags, Image

from refign import build
from refign.data.datasets.synthetic import SyntheticDataset
from refign.engine import checkpoint
from refign.evaluate import run as evaluate_run
from refign.inference.media import VideoWriter, read_frames, read_picture
from refign.inference.segment import segment
from refign.predict import run as predict_run
from tests.conftest import compose_cfg, numpy_miou

N_TEST = 2
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[list[str], Path]:
    """A checkpoint of the shipped source-only segmentor (refign/assets/segmentor_synthetic.pt) in the
    engine's format, the overrides that read it, and the cache of the synthetic benchmark's images."""
    tmp = tmp_path_factory.mktemp("predict")
    cache = tmp.parent / "synthetic_cache"
    overrides = [
        "uda=source_only",
        "refign=off",
        f"paths.cache_dir={cache}",
        f"paths.output_dir={tmp}/outputs",
        f"dataset.test.target.num_images={N_TEST}",
        "trainer.device=cpu",
    ]
    cfg = compose_cfg([*overrides, "checkpoint=unused"], "predict")
    method = build.build_method(cfg)
    ckpt = tmp / "last.pt"
    torch.save({**checkpoint.method_entries(method), "config": OmegaConf.to_container(cfg)}, ckpt)
    return [*overrides, f"checkpoint={ckpt}"], cache


def benchmark_images(cache: Path, n: int) -> list[np.ndarray]:
    data = SyntheticDataset("test", "target", N_TEST, size=(128, 256), load_keys=("image",), cache_dir=cache)
    return [data.arrays["image"][i] for i in range(n)]


def test_same_labels_at_half_and_double_size(synthetic, tmp_path):
    overrides, cache = synthetic
    image = Image.fromarray(benchmark_images(cache, 1)[0])
    folder = tmp_path / "in"
    folder.mkdir()
    for name, scale in (("half", 0.5), ("same", 1), ("double", 2)):
        image.resize((int(256 * scale), int(128 * scale)), Image.BILINEAR).save(folder / f"{name}.png")
    cfg = compose_cfg([*overrides, f"input={folder}"], "predict")
    result = predict_run(cfg, tmp_path / "out")
    assert sorted(p.name for p in result["written"]) == ["double.png", "half.png", "same.png"]

    def labels(name: str) -> np.ndarray:
        pred = Image.open(tmp_path / "out" / "labelTrainIds" / f"{name}.png")
        return np.asarray(pred.resize((256, 128), Image.NEAREST))

    same = labels("same")
    assert Image.open(tmp_path / "out/labelTrainIds/double.png").size == (512, 256)  # the input's size
    assert len(np.unique(same)) >= 4  # a real street scene, not one class everywhere
    for name in ("half", "double"):
        assert (labels(name) == same).mean() > 0.9  # the same labels up to resampling at the borders
    overlay = Image.open(tmp_path / "out/overlay/half.png")
    assert overlay.size[1] == 64 and overlay.size[0] > 128  # the picture, and the legend to its right


def test_folder_gives_the_predictions_evaluate_scores(synthetic, tmp_path):
    overrides, cache = synthetic
    folder = tmp_path / "in" / "nested"
    folder.mkdir(parents=True)
    for i, rgb in enumerate(benchmark_images(cache, N_TEST)):
        Image.fromarray(rgb).save(folder / f"target_test_{i:05d}.png")
    predict_run(compose_cfg([*overrides, f"input={tmp_path / 'in'}"], "predict"), tmp_path / "mine")
    predict_run(compose_cfg(overrides, "predict"), tmp_path / "dataset")  # the dataset path (test split)

    labels = SyntheticDataset("test", "target", N_TEST, size=(128, 256), cache_dir=cache).arrays["semantic"]
    pairs = []
    for i in range(N_TEST):
        name = f"target_test_{i:05d}.png"
        mine = np.asarray(Image.open(tmp_path / "mine" / "labelTrainIds" / "nested" / name))
        np.testing.assert_array_equal(
            mine, np.asarray(Image.open(tmp_path / "dataset/target/labelTrainIds" / name))
        )
        pairs.append((mine, labels[i]))
    scored = evaluate_run(compose_cfg([*overrides, "split=test"], "eval"), tmp_path / "eval")
    assert scored["target"]["mIoU"] == numpy_miou(pairs)


def test_unreadable_file_is_named_skipped_counted_and_fails_the_exit(synthetic, tmp_path):
    overrides, cache = synthetic
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(benchmark_images(cache, 1)[0]).save(folder / "good.jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "refign.predict", *overrides, f"input={folder}", f"out_dir={out}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode == 1, done.stderr[-2000:]
    assert [p.name for p in (out / "labelTrainIds").iterdir()] == ["good.png"]
    log = done.stdout + done.stderr
    assert f"skipped {folder / 'broken.png'}: cannot read image" in log
    assert f"1 of 2 input(s) predicted into {out}; 1 could not be read: {folder / 'broken.png'}" in log


def test_video_in_overlaid_video_out(synthetic, tmp_path):
    overrides, cache = synthetic
    video = tmp_path / "drive.mp4"
    writer = VideoWriter(video, rate=5)
    frames = benchmark_images(cache, 2)
    for k in range(3):
        writer.write(frames[k // 2])
    writer.close()
    cfg = compose_cfg([*overrides, f"input={video}", "video_frames=true"], "predict")
    assert predict_run(cfg, tmp_path / "out")["written"] == [video]

    out_frames = list(read_frames(tmp_path / "out" / "overlay" / "drive.mp4"))
    assert len(out_frames) == 3 and out_frames[0].shape[0] == 128 and out_frames[0].shape[1] > 256
    assert len(list((tmp_path / "out/labelTrainIds/drive").iterdir())) == 3
    model, short_side = build.build_predictor(compose_cfg(overrides, "predict"))
    decoded = list(read_frames(video))  # the frames as the decoder gives them (H.264 is lossy)
    pred = np.asarray(Image.open(tmp_path / "out/labelTrainIds/drive/000002.png"))
    np.testing.assert_array_equal(pred, segment(model.eval(), decoded[2], short_side, torch.device("cpu")))


@pytest.mark.parametrize(
    "overrides,short_side,inference",
    [
        (["dataset=acdc"], 540, "whole"),  # DAFormer: ACDC loaded at 540×960
        (["dataset=dark_zurich"], 540, "whole"),
        (["experiment=acdc_refign_hrda_star"], 1080, "slide"),  # HRDA*: native size, sliding windows
        (["dataset=robotcar"], 1024, "whole"),  # evaluated at RobotCar's native 1024×1024
        ([], 128, "whole"),  # the synthetic benchmark's 128×256 images
    ],
)
def test_the_scale_is_that_of_the_evaluated_images(overrides, short_side, inference):
    cfg = compose_cfg([*overrides, "checkpoint=unused"], "predict")
    assert build.evaluation_short_side(cfg.dataset) == short_side and cfg.model.inference == inference


def predicted(result_dir: Path, name: str) -> np.ndarray:
    return np.asarray(Image.open(result_dir / "labelTrainIds" / f"{name}.png"))


def test_16_bit_pictures_predict_as_their_8_bit_versions(synthetic, tmp_path):
    """Scaled by 1/257, not clipped at 255 (Pillow's convert("RGB") of a 16-bit grey PNG is nearly white)."""
    overrides, cache = synthetic
    rgb = benchmark_images(cache, 1)[0]
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(grey).save(folder / "grey8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(folder / "grey16.png")  # mode I;16
    Image.fromarray(rgb).save(folder / "rgb8.png")
    cv2.imwrite(str(folder / "rgb16.png"), rgb[..., ::-1].astype(np.uint16) * 257)  # 48-bit colour
    assert Image.open(folder / "grey16.png").mode == "I;16"
    np.testing.assert_array_equal(read_picture(folder / "grey16.png"), np.repeat(grey[..., None], 3, 2))
    np.testing.assert_array_equal(read_picture(folder / "rgb16.png"), rgb)
    predict_run(compose_cfg([*overrides, f"input={folder}"], "predict"), tmp_path / "out")
    out = tmp_path / "out"
    np.testing.assert_array_equal(predicted(out, "grey16"), predicted(out, "grey8"))
    np.testing.assert_array_equal(predicted(out, "rgb16"), predicted(out, "rgb8"))
    assert len(np.unique(predicted(out, "grey16"))) >= 3  # a scene, not one class of a white picture


def test_an_exif_rotated_photo_predicts_as_its_upright_version(synthetic, tmp_path):
    """A phone stores the sensor's rows and an EXIF orientation; the labels come out as a viewer shows it."""
    overrides, cache = synthetic
    upright = Image.fromarray(benchmark_images(cache, 1)[0])
    folder = tmp_path / "in"
    folder.mkdir()
    upright.save(folder / "upright.jpg", quality=100, subsampling=0)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = (
        6  # "rotate 90° clockwise to view": the stored rows turned the other way
    )
    upright.transpose(Image.Transpose.ROTATE_90).save(
        folder / "phone.jpg", quality=100, subsampling=0, exif=exif
    )
    assert Image.open(folder / "phone.jpg").size == (128, 256)  # stored on its side
    predict_run(compose_cfg([*overrides, f"input={folder}"], "predict"), tmp_path / "out")
    phone, straight = predicted(tmp_path / "out", "phone"), predicted(tmp_path / "out", "upright")
    assert phone.shape == straight.shape == (128, 256)
    assert (phone == straight).mean() > 0.99  # the same up to the JPEG coding of the turned blocks


def test_every_image_type_pillow_reads_is_predicted_and_other_files_are_named(synthetic, tmp_path, caplog):
    overrides, cache = synthetic
    picture = Image.fromarray(benchmark_images(cache, 1)[0])
    folder = tmp_path / "in"
    folder.mkdir()
    names = ["a.png", "b.webp", "c.bmp", "d.tif", "e.TIFF", "f.ppm", "g.jpg", "g.png"]
    for name in names:
        picture.save(folder / name, **({"lossless": True} if name.endswith(".webp") else {}))
    (folder / "notes.txt").write_text("not a picture")
    with caplog.at_level("WARNING", logger="refign.predict"):
        result = predict_run(compose_cfg([*overrides, f"input={folder}"], "predict"), tmp_path / "out")
    assert [p.name for p in result["written"]] == names and result["left_out"] == [folder / "notes.txt"]
    assert (
        f"left out 1 file(s) that are neither an image Pillow reads nor a video: {folder / 'notes.txt'}"
        in caplog.messages
    )
    # one output per input: g.jpg and g.png keep their suffixes apart
    written = sorted(p.name for p in (tmp_path / "out" / "labelTrainIds").iterdir())
    assert written == ["a.png", "b.png", "c.png", "d.png", "e.png", "f.png", "g.jpg.png", "g.png.png"]
    for name in ("b", "c", "d", "e", "f"):  # lossless types: the PNG's labels
        np.testing.assert_array_equal(predicted(tmp_path / "out", name), predicted(tmp_path / "out", "a"))


def test_transparency_is_composited_over_white(tmp_path):
    """RGBA, grey + alpha and a palette with a transparent entry: a transparent pixel is white, an opaque one
    its colour, a half-transparent one the blend (up to Pillow's rounding)."""
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (200, 100, 0)
    rgba[..., 3] = [[0, 128, 255], [255, 255, 255]]
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    alpha = rgba[..., 3:] / 255
    blend = rgba[..., :3] * alpha + 255 * (1 - alpha)
    assert np.abs(read_picture(tmp_path / "rgba.png") - blend).max() <= 1
    Image.fromarray(np.array([[50, 50]], np.uint8)).convert("LA").save(tmp_path / "la.png")
    la = Image.open(tmp_path / "la.png")
    la.putalpha(Image.fromarray(np.array([[0, 255]], np.uint8)))
    la.save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_picture(tmp_path / "la.png"), [[[255] * 3, [50] * 3]])
    palette = Image.new("P", (2, 1))
    palette.putdata([0, 1])
    palette.putpalette([255, 0, 0, 0, 255, 0])
    palette.save(tmp_path / "p.png", transparency=0)
    np.testing.assert_array_equal(read_picture(tmp_path / "p.png"), [[[255, 255, 255], [0, 255, 0]]])
