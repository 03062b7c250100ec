"""Loading never runs code (docs/checkpoints.md#safe-loading).

A poisoned file is refused through every way in, naming the file and the global, and nothing of it runs
(the payload's marker file stays absent). The project's own checkpoints, the shipped assets and the
third-party formats, built here the way their writers build them, load with ``weights_only=True``.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import types
from argparse import Namespace
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from refign import align, align_train, check_data, evaluate, predict, train
from refign.alignment.vgg import VGGPyramid
from refign.build import instantiate
from refign.data.datasets.megadepth import MegaDepthPairs
from refign.data.io import DatasetError
from refign.engine import checkpoint
from refign.models.backbones import mit
from refign.models.convert import VGG16_CONVS
from refign.models.weights import read_state_dict
from refign.utils.safe_load import CheckpointError, Unloaded, UnsafeFileError, load_npz, load_torch
from scripts.convert_checkpoint import main as convert_main
from tests.conftest import build_matcher, compose_cfg, tiny_overrides
from tests.data.test_convert import MIT_B0, to_segformer

ROOT = Path(__file__).resolve().parents[1]


def entry(tmp: Path, *extra: str) -> list[str]:
    """Overrides of the evaluation / alignment entry points on the synthetic benchmark, on the CPU."""
    return [
        f"paths.cache_dir={tmp.parent}/synthetic_cache",
        f"paths.output_dir={tmp}/outputs",
        "trainer.device=cpu",
        *extra,
    ]


def train_with(*extra: str) -> Callable[[Path, Path], object]:
    """``refign.train`` on the tiny synthetic configuration with ``extra`` overrides (``{bad}``: the file)."""
    return lambda tmp, bad: train.run(
        compose_cfg([*tiny_overrides(tmp, n_train=4, n_val=2), *(e.format(bad=bad) for e in extra)]),
        tmp / "run",
    )


def a_picture(tmp: Path) -> Path:
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp / "photo.png")
    return tmp / "photo.png"


# every way a user's file reaches a loader: (tmp_path, poisoned file) → the call that must refuse it
WAYS: dict[str, Callable[[Path, Path], object]] = {
    "evaluate.checkpoint": lambda tmp, bad: evaluate.run(
        compose_cfg(entry(tmp, f"checkpoint={bad}"), "eval"), tmp / "e"
    ),
    "predict.checkpoint": lambda tmp, bad: predict.run(
        compose_cfg(entry(tmp, f"checkpoint={bad}", f"input={a_picture(tmp)}"), "predict"), tmp / "p"
    ),
    "train.resume": train_with("resume={bad}"),
    "train.init_weights": train_with("init_weights={bad}"),
    "train.backbone.pretrained": train_with("backbone.pretrained={bad}"),
    "train.alignment.checkpoint": train_with("uda=dacs", "refign=on", "alignment.checkpoint={bad}"),
    "align.alignment.checkpoint": lambda tmp, bad: align.run(
        compose_cfg(entry(tmp, f"alignment.checkpoint={bad}"), "align"), tmp / "a"
    ),
    "align_train.alignment.checkpoint": lambda tmp, bad: align_train.run(
        compose_cfg(entry(tmp, "mode=eval", f"alignment.checkpoint={bad}"), "align_train"), tmp / "t"
    ),
    "build.alignment.vgg_weights": lambda tmp, bad: instantiate(
        compose_cfg(["alignment=uawarpc", f"alignment.vgg_weights={bad}"]).alignment
    ),
    "convert_checkpoint.mit": lambda tmp, bad: convert_main(["mit", str(bad), str(tmp / "out.pth")]),
    "convert_checkpoint.clean": lambda tmp, bad: convert_main(["clean", str(bad), str(tmp / "out.pth")]),
}


def assert_refused(err: pytest.ExceptionInfo, bad: Path, poison) -> None:
    msg = str(err.value)
    assert str(bad) in msg and "builtins.exec" in msg and "refused" in msg, msg
    assert not poison.marker.exists(), "the payload ran"


def test_the_payload_is_live(tmp_path, poison):
    """Full unpickling runs it: what every refusal below prevents."""
    torch.load(poison.torch_file(tmp_path / "bad.pt"), weights_only=False)
    assert poison.marker.exists()


@pytest.mark.parametrize("way", WAYS)
def test_a_poisoned_file_is_refused_unread_through_every_way_in(way, tmp_path, poison):
    bad = poison.torch_file(tmp_path / "weights.pt", {"state_dict": {"w": torch.zeros(1)}})
    with pytest.raises(UnsafeFileError) as err:
        WAYS[way](tmp_path, bad)
    assert_refused(err, bad, poison)
    assert "scripts.convert_checkpoint clean" in str(err.value) and "--trust-pickle" in str(err.value)


def test_a_legacy_format_file_is_refused_too(tmp_path, poison):
    """torch.save's pre-1.6 format (torchvision's VGG-16 file has it)."""
    bad = tmp_path / "vgg16.pth"
    torch.save({"payload": poison.payload()}, bad, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeFileError) as err:
        read_state_dict(bad)
    assert_refused(err, bad, poison)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")
def test_a_protocol_4_file_is_refused_naming_the_operation_and_garbage_is_unreadable(tmp_path, poison):
    """torch.save(pickle_protocol=4): the safe unpickler stops at the protocol's framing, before any global
    (a clean copy rewrites it with protocol 2); bytes that are no pickle at all are damage, not a need."""
    bad = tmp_path / "p4.pt"
    torch.save({"payload": poison.payload()}, bad, pickle_protocol=4)
    with pytest.raises(UnsafeFileError, match="needs the pickle operation FRAME"):
        load_torch(bad)
    assert not poison.marker.exists()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read weight file .*junk.pt") as err:
        load_torch(junk)
    assert not isinstance(err.value, UnsafeFileError)


def test_getattr_is_answered_only_for_lightnings_reductions(tmp_path):
    """The allow-list's getattr stand-in hands out no torch function (torch.from_file maps files)."""

    class FromFile:
        def __reduce__(self):
            return getattr, (torch._C._VariableFunctionsClass, "from_file")

    path = tmp_path / "sneaky.ckpt"
    torch.save({"state_dict": {}, "f": FromFile()}, path)
    with pytest.raises(UnsafeFileError, match=r"torch\._C\._VariableFunctionsClass\.from_file"):
        load_torch(path)


def test_the_converter_refuses_on_the_command_line_and_writes_nothing(tmp_path, poison):
    bad, out = poison.torch_file(tmp_path / "bad.ckpt"), tmp_path / "clean.ckpt"
    cmd = [sys.executable, "-m", "scripts.convert_checkpoint", "clean", str(bad), str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0 and f"{bad}: refused" in result.stderr and "builtins.exec" in result.stderr
    assert not out.exists() and not poison.marker.exists()


def test_trust_pickle_writes_a_clean_copy_of_an_inspected_file(tmp_path, capsys):
    """A file that needs a foreign global (here argparse.Namespace) but that the user trusts: the clean
    copy keeps the tensors and plain values and leaves the object out, by name."""
    src, out = tmp_path / "foreign.ckpt", tmp_path / "clean.ckpt"
    weights = OrderedDict(w=torch.arange(3.0))
    torch.save(
        {"state_dict": weights, "args": Namespace(lr=0.1), "rng": np.arange(4), "step": np.int64(7)}, src
    )
    with pytest.raises(UnsafeFileError, match="argparse.Namespace"):
        convert_main(["clean", str(src), str(out)])
    convert_main(["clean", str(src), str(out), "--trust-pickle"])
    assert "left out: args (argparse.Namespace)" in capsys.readouterr().out
    copy = torch.load(out, weights_only=True)  # no allow-list needed
    assert set(copy) == {"state_dict", "rng", "step"} and copy["step"] == 7
    assert torch.equal(copy["state_dict"]["w"], weights["w"]) and torch.equal(copy["rng"], torch.arange(4))


def test_trust_pickle_is_only_for_clean(tmp_path):
    with pytest.raises(SystemExit):
        convert_main(["mit", str(tmp_path / "a.pth"), str(tmp_path / "b.pth"), "--trust-pickle"])


# ---- the project's own files ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A real training checkpoint (2 steps of the tiny configuration) and its folder."""
    tmp = tmp_path_factory.mktemp("own")
    train.run(compose_cfg([*tiny_overrides(tmp, n_train=4, n_val=2), "trainer.max_steps=2"]), tmp / "run")
    return tmp / "run" / "checkpoints" / checkpoint.LAST, tmp


def test_own_checkpoint_loads_with_weights_only_and_no_allow_list(trained):
    state = torch.load(trained[0], weights_only=True)
    assert state["step"] == 2 and state["format"] == checkpoint.FORMAT
    name, key, *_ = state["rng"][0]["numpy"]
    assert name == "MT19937" and len(key) == 624 and all(isinstance(k, int) for k in key)


def test_a_checkpoint_with_numpys_random_state_still_loads_and_restores_it_exactly(trained, tmp_path):
    """Format-3 files written before the random states became lists: NumPy's tuple holds an array, loaded
    through the allow-list's three NumPy globals (and the uint32 dtype)."""
    state = torch.load(trained[0], weights_only=True)
    np.random.seed(5)
    state["rng"][0]["numpy"] = np.random.get_state()
    expected = np.random.rand(4)
    old = tmp_path / "old.pt"
    torch.save(state, old)
    with pytest.raises(pickle.UnpicklingError):  # needs them
        torch.load(old, weights_only=True)
    np.random.seed(0)
    checkpoint.set_rng_state(checkpoint.load(old)["rng"][0])
    assert np.array_equal(np.random.rand(4), expected)


def test_a_real_checkpoint_with_the_payload_added_is_refused(trained, poison):
    path, tmp = trained
    bad = poison.torch_file(tmp / "last_poisoned.pt", torch.load(path, weights_only=True))
    with pytest.raises(UnsafeFileError) as err:
        evaluate.run(compose_cfg(entry(tmp, f"checkpoint={bad}"), "eval"), tmp / "eval")
    assert_refused(err, bad, poison)


@pytest.mark.parametrize("asset", sorted((ROOT / "refign" / "assets").glob("*.pt")), ids=lambda p: p.name)
def test_shipped_assets_load_with_weights_only(asset):
    state = torch.load(asset, weights_only=True)
    assert state and all(torch.is_tensor(v) for v in read_state_dict(asset).values())


# ---- third-party formats, built as their writers build them ---------------------------------------------
def lightning_1_5_checkpoint(state_dict: dict[str, torch.Tensor]) -> dict:
    """What Lightning 1.5.10 (the official code's pin) writes for the official modules, from its source:
    CheckpointConnector.dump_checkpoint (no ``hyper_parameters``: neither the official modules nor
    LightningCLI 1.5 call save_hyperparameters), Loop.state_dict with each loop's ResultCollection state
    (result.py: ``ResultMetric.__getstate__`` of a ``self.log`` value, torchmetrics 0.9 Metric attributes
    included), ModelCheckpoint.on_save_checkpoint, AdamW, the official LinearWarmupPolynomialLR
    (helpers/lr_scheduler.py) and native AMP (``--trainer.precision 16``)."""
    logged = {
        **{
            k: OrderedDict()
            for k in ("_parameters", "_buffers", "_modules", "_forward_hooks", "_backward_hooks")
        },
        "training": True,
        "_non_persistent_buffers_set": set(),
        "_device": torch.device("cpu"),
        "_dtype": torch.float32,
        "dist_sync_on_step": False,
        "process_group": None,
        "dist_sync_fn": None,
        "_computed": None,
        "_update_count": 1,
        "_defaults": {"value": torch.tensor(0.0), "cumulated_batch_size": torch.tensor(0)},
        "_persistent": {"value": False, "cumulated_batch_size": False},
        "_reductions": {"value": torch.sum, "cumulated_batch_size": torch.sum},
        "is_tensor": True,
        "value": torch.tensor(0.7),
        "cumulated_batch_size": torch.tensor(2),
        "meta": {
            "fx": "training_step",
            "name": "train_loss_src",
            "on_step": True,
            "on_epoch": False,
            "reduce_fx": torch.mean,
            "dataloader_idx": None,
            "_sync": {"_should": False, "_op": None},
        },
        "_class": "ResultMetric",
        "_is_synced": False,
    }
    results = {
        "training": True,
        "device": torch.device("cpu"),
        "batch": None,
        "items": {"training_step.train_loss_src": logged},
    }
    progress = {"total": {"ready": 40000, "completed": 40000}, "current": {"ready": 0, "completed": 0}}
    params = list(state_dict.values())[:2]
    optimizer = torch.optim.AdamW([p.clone().requires_grad_() for p in params], lr=6e-5)
    for p in optimizer.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    optimizer.step()
    return {
        "epoch": 3,
        "global_step": 40000,
        "pytorch-lightning_version": "1.5.10",
        "state_dict": OrderedDict(state_dict),
        "loops": {
            "fit_loop": {
                "state_dict": {},
                "epoch_progress": progress,
                "epoch_loop.batch_progress": progress,
                "epoch_loop._results": results,
                "epoch_loop.val_loop._results": results,
            },
            "validate_loop": {"state_dict": {}, "_results": results},
        },
        "callbacks": {
            "ModelCheckpoint{'monitor': None, 'mode': 'min', 'every_n_train_steps': 0, 'every_n_epochs': 1, "
            "'train_time_interval': None, 'save_on_train_epoch_end': True}": {
                "monitor": None,
                "best_model_score": None,
                "best_model_path": "",
                "current_score": None,
                "dirpath": "/logs/checkpoints",
                "best_k_models": {},
                "kth_best_model_path": "",
                "kth_value": torch.tensor(float("inf")),
                "last_model_path": "/logs/checkpoints/last.ckpt",
            }
        },
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [
            {
                "max_updates": 40000,
                "warmup_iters": 1500,
                "warmup_ratio": 1e-6,
                "power": 1.0,
                "min_lr": 0.0,
                "base_lrs": [6e-5],
                "last_epoch": 40000,
                "_step_count": 40001,
                "_get_lr_called_within_step": False,
                "_last_lr": [0.0],
            }
        ],
        "native_amp_scaling_state": {
            "scale": 65536.0,
            "growth_factor": 2.0,
            "backoff_factor": 0.5,
            "growth_interval": 2000,
            "_growth_tracker": 0,
        },
    }


def test_official_refign_lightning_checkpoint_loads(tmp_path):
    official = {
        "backbone.patch_embed1.proj.weight": torch.randn(4, 3, 7, 7),
        "m_head.linear_fuse.bias": torch.randn(4),
    }
    path = tmp_path / "refign_daformer_acdc.ckpt"
    torch.save(lightning_1_5_checkpoint(official), path)
    # what the allow-list is for: the logged values' reductions, pickled as getattr(<torch functions>, "mean")
    assert sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path)) == [
        "builtins.getattr",
        "torch._C._VariableFunctionsClass",
    ]
    state = read_state_dict(path)
    assert state.keys() == official.keys() and all(torch.equal(state[k], v) for k, v in official.items())
    logged = load_torch(path)["loops"]["fit_loop"]["epoch_loop._results"]["items"][
        "training_step.train_loss_src"
    ]
    assert logged["meta"]["reduce_fx"] == Unloaded("torch.mean")
    assert logged["_reductions"]["value"] == Unloaded("torch.sum")


def test_released_matcher_lightning_checkpoint_loads_into_the_matcher(tmp_path):
    """uawarpc_megadepth.ckpt: the official AlignmentModel's Lightning file (CPU-scale matcher here)."""
    torch.manual_seed(0)
    weights = build_matcher(small=True).state_dict()
    path = tmp_path / "uawarpc_megadepth.ckpt"
    torch.save(lightning_1_5_checkpoint(weights), path)
    loaded = build_matcher(small=True, checkpoint=str(path)).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in weights.items())


def test_lightning_0_9_hyper_parameters_load_as_a_dict(tmp_path, monkeypatch):
    """Lightning 0.8-0.9 pickled ``model.hparams``, an AttributeDict: saved with a stand-in class registered
    under Lightning's module name, loaded without it."""
    parsing = types.ModuleType("pytorch_lightning.utilities.parsing")
    parsing.AttributeDict = type("AttributeDict", (dict,), {"__module__": parsing.__name__})
    for name, module in [
        ("pytorch_lightning", types.ModuleType("pytorch_lightning")),
        ("pytorch_lightning.utilities", types.ModuleType("pytorch_lightning.utilities")),
        (parsing.__name__, parsing),
    ]:
        monkeypatch.setitem(sys.modules, name, module)
    path = tmp_path / "old_lightning.ckpt"
    torch.save(
        {"state_dict": {"w": torch.ones(1)}, "hparams": parsing.AttributeDict(lr=0.01, backbone="mit_b5")},
        path,
    )
    monkeypatch.undo()
    assert "pytorch_lightning" not in sys.modules
    assert load_torch(path)["hparams"] == {"lr": 0.01, "backbone": "mit_b5"}


def test_segformer_mit_files_load_and_convert(tmp_path):
    """The SegFormer release's mit_b*.pth (a bare state dict) and an mmcv checkpoint (meta, state_dict,
    optimizer, as mmcv's save_checkpoint writes the Cityscapes SegFormer-B5)."""
    torch.manual_seed(0)
    reference = mit(**MIT_B0, drop_path_rate=0.0)
    official = OrderedDict(to_segformer(reference.state_dict()))
    meta = {
        "mmcv_version": "1.2.7",
        "time": "Thu Jun 10 2021",
        "CLASSES": ("road", "sidewalk"),
        "PALETTE": [[128, 64, 128]],
    }
    for name, content in [
        ("mit_b0.pth", official),
        ("segformer.pth", {"meta": meta, "state_dict": official, "optimizer": {}}),
    ]:
        torch.save(content, tmp_path / name)
        convert_main(["mit", str(tmp_path / name), str(tmp_path / f"mmseg_{name}")])
        loaded = mit(**MIT_B0, drop_path_rate=0.0, pretrained=str(tmp_path / f"mmseg_{name}"))
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in reference.state_dict().items())


def test_torchvision_vgg16_file_loads_into_the_matchers_pyramid(tmp_path):
    """torchvision's vgg16-397923af.pth: a bare state dict in torch.save's legacy (pre-zip) format."""
    state = OrderedDict()
    for i, (cout, cin) in VGG16_CONVS.items():
        state[f"features.{i}.weight"], state[f"features.{i}.bias"] = (
            torch.randn(cout, cin, 3, 3),
            torch.randn(cout),
        )
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    loaded = VGGPyramid(weights=path).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


# ---- MegaDepth scene info ----------------------------------------------------------------------------------
def object_array(items: list) -> np.ndarray:
    """What NumPy < 1.24 made of D2-Net's mixed lists (np.savez of [array, None, …]); newer NumPy refuses
    ragged lists, so the object array is filled by hand: the file holds the same pickle."""
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def scene_info(root: Path, extra: object = None) -> Path:
    """One scene as D2-Net's megadepth_utils/preprocess_scene.py writes it (three images, the last without a
    depth map), ``extra`` appended to its image paths."""
    images = [f"Undistorted_SfM/0015/images/{i}.jpg" for i in range(3)]
    for i, rel in enumerate(images):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((30, 40, 3), 40 * i, np.uint8)).save(root / rel)
    intrinsics = [np.eye(3) * (i + 1) for i in range(3)]
    path = root / "scene_info" / "0015.0.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        image_paths=object_array([*images, *([extra] if extra is not None else [])]),
        depth_paths=object_array([f"phoenix/0015/dense0/depths/{i}.h5" for i in range(2)] + [None]),
        points3D_id_to_2D=object_array([{7: [10.0, 5.0], 8: [20.0, 15.0]}, {7: [12.0, 6.0]}, {}]),
        intrinsics=object_array(intrinsics),
        poses=object_array([np.eye(4).flatten(), np.eye(4).flatten(), None]),
        fact_x=object_array([1.0, 0.5, None]),
        overlap_matrix=np.array([[-1.0, 0.5, -1.0], [0.5, -1.0, -1.0], [-1.0, -1.0, -1.0]]),
    )
    return path


def test_d2net_scene_info_reads_without_pickle(tmp_path):
    path = scene_info(tmp_path)
    got = load_npz(
        path, ["image_paths", "points3D_id_to_2D", "intrinsics", "poses", "fact_x", "overlap_matrix"]
    )
    with np.load(path, allow_pickle=True) as trusted:  # our own file: full pickle gives the reference
        for key, value in got.items():
            assert value.dtype == trusted[key].dtype and value.shape == trusted[key].shape, key
            for a, b in zip(value.ravel(), trusted[key].ravel(), strict=True):
                assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b, key
    assert len(MegaDepthPairs(tmp_path, split="train", dims=(30, 40), scenes=["0015"])) == 2


def test_poisoned_scene_info_is_refused_by_the_loader_and_the_data_check(tmp_path, poison):
    path = scene_info(tmp_path / "MegaDepth", extra=poison.payload())
    with pytest.raises(DatasetError) as err:
        MegaDepthPairs(tmp_path / "MegaDepth", split="train", scenes=["0015"])
    assert_refused(err, path, poison)
    cfg = compose_cfg(["pairs=megadepth", f"paths.data_root={tmp_path}"], "check_data")
    problems = [p for p in check_data.run(cfg)[0].problems if p.kind == "unreadable"]
    assert len(problems) == 1 and str(path) in problems[0].message and "builtins.exec" in problems[0].message
    assert not poison.marker.exists()
    with np.load(path, allow_pickle=True) as npz:  # what the loaders did before: the payload runs
        npz["image_paths"]
    assert poison.marker.exists()
