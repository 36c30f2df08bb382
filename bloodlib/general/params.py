"""Parameters of ``notebooks/05_generalisation.ipynb`` (``params/<profile>/05_generalisation.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass

from bloodlib.params import check_values, precision_check

STAINS = ("none", "reinhard", "macenko")


@dataclass(frozen=True)
class GeneralParams:
    """Every knob of the general models and their evaluation.

    Data: ``train_images``/``val_images`` cap the training/validation fields, shared out over the
    sources (0 = all; the quick profile uses a few).

    Detector (:mod:`bloodlib.general.detector`): an SSD300 with ``backbone`` at channel ``width``
    (see ``01_detection`` for ``batch_norm``, ``pretrained``, ``anchor_*`` and ``match_iou``), run at
    the canonical scale of :class:`bloodlib.detection.scaled.ScaleSpec` (``rbc_diameter``,
    ``tile``, ``tile_overlap``, ``fit_slack``) and trained with scale jitter ``scale_jitter``,
    flips and a colour/stain jitter (``colour_p``, ``hue``), with the recipe of
    :class:`bloodlib.training.TrainConfig` (``precision``: bfloat16 autocast where the hardware has it;
    the classifier's precision is ``02_wbc_subtypes``'s). ``cross_source_epochs`` train the
    single-source detectors of the source x source table.

    Classifier (:mod:`bloodlib.general.classifier`): ``classifier_model`` with the crop policy,
    augmentation and recipe of ``02_wbc_subtypes``'s ``classifier_profile`` except
    ``classifier_epochs``; fields are stain-normalised with ``stain`` (``none``, ``reinhard`` or
    ``macenko``) fitted on the training fields; PBC (``pbc_per_class`` images of each subtype, 0 =
    all 600) is split per image into train/val/test by ``pbc_val_fraction``/``pbc_test_fraction``.
    The leave-one-source-out classifiers train ``loso_epochs`` epochs with each of ``loso_stains``
    (with Task 2's colour jitter) and, if ``loso_without_jitter``, without normalisation and jitter.

    Evaluation: ``bootstrap`` resamples for 95 % intervals; ``rescale_factors`` for the synthetic
    magnification test; ``ood_*`` thresholds of the out-of-distribution flags.
    """

    seed: int
    num_threads: int
    precision: str
    train_images: int
    val_images: int

    backbone: str
    width: float
    batch_norm: bool
    pretrained: bool
    anchor_scales: list[float]
    anchor_aspect_ratios: list[float]
    match_iou: float
    rbc_diameter: float
    tile: int
    tile_overlap: int
    fit_slack: float
    scale_jitter: float
    hflip_p: float
    vflip_p: float
    colour_p: float
    hue: float
    epochs: int
    cross_source_epochs: int
    batch_size: int
    optimizer: str
    lr: float
    momentum: float
    beta2: float
    weight_decay: float
    warmup_epochs: float
    final_lr_fraction: float
    grad_clip: float
    eval_every: int
    num_workers: int

    classifier_profile: str
    classifier_model: str
    classifier_epochs: int
    stain: str
    loso_stains: list[str]
    loso_without_jitter: bool
    loso_epochs: int
    pbc_per_class: int
    pbc_val_fraction: float
    pbc_test_fraction: float

    bootstrap: int
    rescale_factors: list[float]
    ood_colour_score: float
    ood_scale_range: list[float]
    ood_confidence: float

    def __post_init__(self) -> None:
        check_values(
            "GeneralParams",
            [
                (
                    self.stain in ("none", "reinhard", "macenko"),
                    f"stain must be none, reinhard or macenko, got {self.stain!r}",
                ),
                (0 <= self.scale_jitter < 1, f"scale_jitter must be in [0, 1), got {self.scale_jitter!r}"),
                (
                    0 < self.pbc_val_fraction
                    and 0 < self.pbc_test_fraction
                    and self.pbc_val_fraction + self.pbc_test_fraction < 1,
                    "pbc_val_fraction and pbc_test_fraction must be > 0 and sum to < 1",
                ),
                (
                    len(self.ood_scale_range) == 2 and 0 < self.ood_scale_range[0] < self.ood_scale_range[1],
                    "ood_scale_range must be [low, high] with 0 < low < high",
                ),
                (0 <= self.ood_confidence <= 1, f"ood_confidence must be in [0, 1], got {self.ood_confidence!r}"),
                precision_check(self.precision),
            ],
        )
