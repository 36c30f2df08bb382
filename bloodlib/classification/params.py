"""Parameters of ``notebooks/02_wbc_subtypes.ipynb`` (``params/<profile>/02_wbc_subtypes.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass

from bloodlib.params import check_values, precision_check


@dataclass(frozen=True)
class WbcSubtypesParams:
    """Every knob of the WBC-subtype task; profiles differ only in these values.

    Crop policy (see :class:`bloodlib.classification.crops.CropPolicy`): ``input_size`` [h, w],
    ``context``, ``canvas_scale``, ``min_box_side``, ``white_percentile``, ``nucleus_to_cell``.

    Data: ``val_fraction`` of TRAIN's source images (per class) form the grouped validation
    split; ``*_max_per_source`` cap the augmented copies used per source image (null = all).

    Training (see :class:`bloodlib.training.TrainConfig`, also for ``precision``): the custom nets train
    ``epochs_custom`` epochs at learning rate ``lr_custom``, the six standard backbones
    ``epochs_standard`` at ``lr_standard`` (deep nets from scratch need a smaller one), each
    epoch being ``samples_per_epoch`` class-balanced draws. ``aug_*`` set the augmentation strengths
    (:class:`bloodlib.classification.transforms.AugmentConfig`).

    Evaluation: ``tta`` averages each test input's predictions over its rotations and mirror
    images (the notebook scores it on the validation split, with and without); ``bootstrap`` resamples of source images for the 95% CIs; ``feature_map_samples``
    random TEST images for Figures 8/9; ``timing_repeats`` runs of one-image inference.
    """

    seed: int
    num_threads: int
    precision: str
    models: list[str]
    pretrained: bool
    input_size: tuple[int, int]
    context: float
    canvas_scale: float
    min_box_side: float
    white_percentile: float
    nucleus_to_cell: float
    val_fraction: float
    train_max_per_source: int | None
    val_max_per_source: int | None
    test_max_per_source: int | None
    epochs_custom: int
    epochs_standard: int
    samples_per_epoch: int
    batch_size: int
    lr_custom: float
    lr_standard: float
    final_lr_fraction: float
    weight_decay: float
    label_smoothing: float
    aux_loss_weight: float
    aug_rotation: float
    aug_shear: float
    aug_translate: float
    aug_scale: float
    aug_brightness: float
    aug_contrast: float
    aug_saturation: float
    aug_hue: float
    aug_blur_p: float
    eval_batch_size: int
    tta: bool
    bootstrap: int
    feature_map_samples: int
    timing_repeats: int

    def __post_init__(self) -> None:
        """Value checks (types, missing and unknown keys are checked by :func:`bloodlib.params.build`)."""
        check_values("WbcSubtypesParams", [precision_check(self.precision)])
