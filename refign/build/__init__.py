"""The composition root: the one place that turns a composed configuration into objects and wires them
together, one module per product (docs/architecture.md#composition-root): ``segmentation`` (``refign.train``),
``inference`` (``refign.evaluate``, ``refign.predict``), ``matcher`` (``refign.align_train``, ``refign.align``)
and ``common``, what both trainings build alike. Entry points set up the process (``refign.task``), call a
``build_*`` here, run what they got and close it."""

from refign.build.common import build_logger, build_train_step, instantiate
from refign.build.data_check import check_dataset, check_matching, dataset_specs
from refign.build.inference import build_inference_model, build_predictor, evaluation_short_side
from refign.build.matcher import (
    build_aligner,
    build_matcher,
    build_matcher_eval,
    build_matcher_trainer,
    build_pair_sets,
    dataset_pairs,
    stage_cfg,
)
from refign.build.segmentation import (
    build_datasets,
    build_method,
    build_segmentation_eval,
    build_segmentor,
    build_train_sets,
    build_trainer,
    method_class,
    target_load_keys,
)
