"""Parameters of ``notebooks/04_pipeline.ipynb`` and of ``bloodlib analyze`` (``params/<profile>/04_pipeline.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass

from bloodlib.params import check_values, precision_check


@dataclass(frozen=True)
class PipelineParams:
    """Every knob of the smear pipeline; profiles differ only in these values.

    Models: ``models: general`` (the default) are the general detector and WBC classifier of
    ``05_generalisation`` with the ``general_profile``'s parameters (trained beyond BCCD, any
    magnification: each field is rescaled by its RBC size, estimated per field unless
    ``um_per_pixel`` > 0 gives the pixel size); ``models: bccd`` are the paper-reproduction models:
    the SSD300 with ``detection_backbone`` trained with the ``detection_profile``'s ``01_detection``
    parameters and ``classifier_model`` trained with the ``classifier_profile``'s
    ``02_wbc_subtypes`` parameters. All come from the trained-model cache. ``train_missing_models`` lets the
    notebook train them when the cache lacks them (the quick profile's tiny models, in
    seconds); otherwise a missing model is an error that says how to train it.

    Inference: ``batch_size`` images per forward pass, ``num_workers`` DataLoader processes
    decoding images, ``num_threads`` torch threads, ``precision`` of the detector (``"float32"``, or
    ``"bfloat16"``: CPU autocast, used only where the CPU supports it natively, float32 elsewhere).
    Images with a side above ``max_side`` pixels are resized (with a warning), images with a side
    below ``min_side`` are refused.
    ``fallback_score_threshold`` is the detection score threshold used for counting when
    the per-class thresholds cannot be chosen on BCCD's validation images (data missing).

    COVID-19 model (trained on OSR's scale-free features, see :mod:`bloodlib.pipeline.covid`):
    ``covid_features`` the features (without age and sex, which are added when given),
    ``covid_classifier`` the classifier used for the probability, ``covid_cv_classifiers``
    those compared by nested CV with ``outer_repeats`` x ``outer_folds`` outer and
    ``inner_folds`` inner folds, grid ``covid_grid_size``, ``n_jobs`` processes; intervals at
    ``ci_level``. ``min_wbc_confident``: a sample with fewer classified WBCs gets its probability
    flagged low-confidence.

    Notebook: the BCCD test split (``test_images`` caps it, 0 = all) is grouped into
    pseudo-samples of ``pseudo_sample_size`` images drawn with ``seed``;
    ``match_iou`` matches detections to ground-truth boxes; ``examples`` annotated images are shown.
    ``interactive``: in JupyterLab, True shows an upload box where a student analyses a smear image of
    their own (:func:`bloodlib.pipeline.widget.smear_upload`); rendered reports leave it False.
    """

    seed: int
    num_threads: int
    precision: str
    models: str
    general_profile: str
    um_per_pixel: float
    detection_profile: str
    detection_backbone: str
    classifier_profile: str
    classifier_model: str
    train_missing_models: bool
    batch_size: int
    num_workers: int
    max_side: int
    min_side: int
    fallback_score_threshold: float
    min_wbc_confident: int
    covid_features: list[str]
    covid_classifier: str
    covid_cv_classifiers: list[str]
    covid_grid_size: str
    outer_repeats: int
    outer_folds: int
    inner_folds: int
    ci_level: float
    n_jobs: int
    test_images: int
    pseudo_sample_size: int
    match_iou: float
    examples: int
    interactive: bool

    def __post_init__(self) -> None:
        """Value checks (types, missing and unknown keys are checked by :func:`bloodlib.params.build`)."""
        from bloodlib.diagnosis.models import CLASSIFIERS, GRID_SIZES
        from bloodlib.pipeline.features import SCALE_FREE_FEATURES

        checks = [
            (self.num_threads >= 1, "num_threads must be >= 1"),
            (self.models in ("general", "bccd"), f"models must be general or bccd, got {self.models!r}"),
            (self.um_per_pixel >= 0, f"um_per_pixel must be >= 0 (0 = estimate each field), got {self.um_per_pixel!r}"),
            precision_check(self.precision),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
            (self.max_side >= self.min_side >= 16, "need max_side >= min_side >= 16"),
            (0 <= self.fallback_score_threshold <= 1, "fallback_score_threshold must be in [0, 1]"),
            (self.min_wbc_confident >= 1, "min_wbc_confident must be >= 1"),
            (
                bool(self.covid_features) and set(self.covid_features) <= set(SCALE_FREE_FEATURES),
                f"covid_features must be a non-empty subset of {list(SCALE_FREE_FEATURES)}",
            ),
            (self.covid_classifier in CLASSIFIERS, f"covid_classifier must be one of {list(CLASSIFIERS)}"),
            (
                set(self.covid_cv_classifiers) <= set(CLASSIFIERS),
                f"covid_cv_classifiers must be from {list(CLASSIFIERS)}",
            ),
            (self.covid_grid_size in GRID_SIZES, f"covid_grid_size must be one of {list(GRID_SIZES)}"),
            (
                self.outer_repeats >= 1 and self.outer_folds >= 2 and self.inner_folds >= 2,
                "need outer_repeats >= 1, outer_folds >= 2, inner_folds >= 2",
            ),
            (0 < self.ci_level < 1, "ci_level must be in (0, 1)"),
            (self.n_jobs != 0, "n_jobs must not be 0"),
            (self.test_images >= 0, "test_images must be >= 0"),
            (self.pseudo_sample_size >= 1, "pseudo_sample_size must be >= 1"),
            (0 < self.match_iou < 1, "match_iou must be in (0, 1)"),
            (self.examples >= 0, "examples must be >= 0"),
        ]
        check_values("PipelineParams", checks)
