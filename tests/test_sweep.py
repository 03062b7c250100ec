"""A point of a ``-m`` sweep equals the same run alone, bit for bit.

Hydra's basic launcher runs a sweep's points one after another in one process, so the second point is the
second run of its process while the run alone is the first of its own: anything done once per process after
seeding (an import that draws from a global random stream, issue 15) or left behind by the previous run
makes the two differ. Both are real ``python -m refign.train`` processes.
"""

from __future__ import annotations

from tests.conftest import tiny_overrides
from tests.methods import METHODS, MICRO, assert_bit_equal, finish, max_difference, train_cli, weights


def test_second_sweep_point_equals_the_same_run_alone(tmp_path):
    args = [*tiny_overrides(tmp_path, n_train=8, n_val=2), *METHODS["daformer_rcs_refign"], *MICRO]
    args.append("trainer.max_steps=3")
    sweep_dir, alone_dir = tmp_path / "sweep", tmp_path / "alone"
    sweep = train_cli("-m", *args, "seed=0,1", f"hydra.sweep.dir={sweep_dir}", log=tmp_path / "sweep.log")
    alone = train_cli(*args, "seed=1", f"hydra.run.dir={alone_dir}", log=tmp_path / "alone.log")
    out = finish(sweep)
    finish(alone)

    assert out.count("target-val mIoU") == 2  # both points trained and evaluated
    points = [weights(sweep_dir / str(n) / "checkpoints" / "last.pt") for n in (0, 1)]
    assert max_difference(*points) > 0.01  # the seed matters
    assert_bit_equal(points[1], weights(alone_dir / "checkpoints" / "last.pt"))
