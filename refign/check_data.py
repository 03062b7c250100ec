"""python -m refign.check_data [dataset=acdc|dark_zurich|robotcar|synthetic]
[pairs=megadepth|robotcar|synthetic] [paths.data_root=…] — is the download complete and laid out right?

Walks the splits the composition would load (``splits=all``: every split of each dataset it names), prints a
report per split against the official counts and one summary line, and exits with status 1 when anything is
missing or broken (docs/tools.md#check-data).
"""

from __future__ import annotations

import sys
import time

from omegaconf import DictConfig

from refign import build
from refign.data.check import FileCheck, Report, summary
from refign.task import entry_point


@entry_point("check_data")
def main(cfg: DictConfig) -> None:
    if any(r.problems for r in run(cfg)):
        sys.exit(1)


def run(cfg: DictConfig) -> list[Report]:
    """Check every split of the dataset (or, with ``pairs=…``, the matcher's pairs), printing each
    report as it is done, then the summary line."""
    check = FileCheck(bool(cfg.decode), bool(cfg.label_values), int(cfg.workers))
    start, reports, seen = time.perf_counter(), [], set()
    if cfg.get("pairs") is not None:
        checks = iter(build.check_matching(cfg, check))
    else:
        checks = (r for spec in build.dataset_specs(cfg) for r in build.check_dataset(cfg, spec, check, seen))
    for report in checks:
        print("\n".join(report.lines()), flush=True)
        reports.append(report)
    print(summary(reports, time.perf_counter() - start), flush=True)
    return reports


if __name__ == "__main__":
    main()
