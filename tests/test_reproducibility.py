"""Same seed, same weights: a point of a ``-m`` sweep equals the same run alone, bit for bit; the
``trainer.deterministic`` switch holds for one run only.

Hydra's basic launcher runs a sweep's points one after another in one process, so the second point is the
second run of its process while the run alone is the first of its own: anything done once per process after
seeding (an import that draws from a global random stream, issue 15) or left behind by the previous run
makes the two differ. Both are real ``python -m refign.train`` processes.
"""

from __future__ import annotations

import os

import pytest
import torch

from refign.align_train import run as align_run
from refign.engine import trainer as trainer_mod
from refign.engine.reproducibility import CUBLAS_WORKSPACE, target_modules
from refign.train import run
from tests.conftest import compose_cfg, tiny_overrides
from tests.methods import METHODS, MICRO, assert_bit_equal, finish, max_difference, train_cli, weights


@pytest.mark.parametrize(
    "launcher,launched",
    [
        (
            [],
            "Launching 2 jobs locally",
        ),  # the basic launcher: both points in this process, one after another
        # joblib worker processes: how the ablation sweep runs two points at once
        (["hydra/launcher=parallel"], "Joblib.Parallel(n_jobs=2"),
    ],
    ids=["basic", "parallel"],
)
def test_second_sweep_point_equals_the_same_run_alone(tmp_path, launcher, launched):
    """The launcher changes where a point runs, not what it computes."""
    args = [*tiny_overrides(tmp_path, n_train=8, n_val=2), *METHODS["daformer_rcs_refign"], *MICRO]
    args.append("trainer.max_steps=3")
    sweep_dir, alone_dir = tmp_path / "sweep", tmp_path / "alone"
    sweep = train_cli(
        "-m", *args, *launcher, "seed=0,1", f"hydra.sweep.dir={sweep_dir}", log=tmp_path / "sweep.log"
    )
    alone = train_cli(*args, "seed=1", f"hydra.run.dir={alone_dir}", log=tmp_path / "alone.log")
    out = finish(sweep)
    finish(alone)

    assert launched in out
    assert out.count("target-val mIoU") == 2  # both points trained and evaluated
    points = [weights(next(sweep_dir.glob(f"{n}_*")) / "checkpoints" / "last.pt") for n in (0, 1)]
    assert max_difference(*points) > 0.01  # the seed matters
    assert_bit_equal(points[1], weights(alone_dir / "checkpoints" / "last.pt"))


def test_target_modules_are_those_the_build_instantiates(tmp_path):
    cfg = compose_cfg([*tiny_overrides(tmp_path), *METHODS["daformer_rcs_refign"]])
    modules = target_modules(cfg)
    for module in (
        "refign.models.backbones",
        "refign.uda.dacs",
        "refign.alignment.oracle",
        "refign.data.rcs",
    ):
        assert module in modules
    assert len(modules) == len(set(modules))


@pytest.mark.parametrize("entry", ["train", "align_train"])  # align_train ignored the switch before
def test_deterministic_switch_holds_during_the_run_only(tiny_cfg, tmp_path, monkeypatch, entry):
    cudnn = torch.backends.cudnn
    monkeypatch.setattr(cudnn, "benchmark", True)  # what the process had before the run
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seen = {}

    def recording_fit(self, stop=None):
        seen.update(
            algorithms=torch.are_deterministic_algorithms_enabled(),
            warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
            benchmark=cudnn.benchmark,
            cudnn_deterministic=cudnn.deterministic,
            cublas=os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        )
        raise KeyboardInterrupt  # what the trainer would do next is not this test's business

    monkeypatch.setattr(trainer_mod.Trainer, "fit", recording_fit)
    if entry == "train":
        cfg = tiny_cfg(
            *METHODS["dacs"], *MICRO, "trainer.max_steps=1", "trainer.deterministic=true", n_train=4
        )
        with pytest.raises(KeyboardInterrupt):
            run(cfg, tmp_path)
    else:
        cfg = compose_cfg(
            [
                f"paths.output_dir={tmp_path}/out",
                f"paths.cache_dir={tmp_path.parent}/align_cache",
                "trainer.deterministic=true",
            ],
            "align_train",
        )
        with pytest.raises(KeyboardInterrupt):
            align_run(cfg, tmp_path / "align")
    assert seen == {
        "algorithms": True,
        "warn_only": True,
        "benchmark": False,
        "cudnn_deterministic": True,
        "cublas": CUBLAS_WORKSPACE,
    }
    assert not torch.are_deterministic_algorithms_enabled()
    assert cudnn.benchmark and not cudnn.deterministic
