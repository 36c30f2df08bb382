"""Parameters of ``notebooks/01_detection.ipynb`` (one frozen dataclass, flat literal fields)."""

from __future__ import annotations

from dataclasses import dataclass

from bloodlib.params import check_values, precision_check


@dataclass(frozen=True)
class DetectionParams:
    """Every knob of Task 1; ``params/<profile>/01_detection.yaml`` states each one.

    Data: ``split`` is ``"official"`` (BCCD's train/val/test lists) or ``"random75"`` (the
    paper's seeded 75/25 split, 15 % of the training part held out for validation);
    ``*_images`` cap a part's size (0 = all; the quick profile uses a few).
    Models: channel ``*_width`` multipliers (1.0 = the real VGG16/AlexNet), BatchNorm,
    ImageNet weights (``pretrained``, needs width 1.0 and no BatchNorm), seven anchor
    ``anchor_scales`` and the extra ``anchor_aspect_ratios``, and the IoU ``match_iou`` at which a
    default box becomes a positive (see ``bloodlib.detection.model``).
    Training: see ``bloodlib.training.TrainConfig``; ``momentum`` is Adam's beta1; ``precision``
    ``bfloat16`` trains under bf16 autocast where the CPU/GPU has it natively (float32 elsewhere).
    Augmentation: probabilities of each step of ``bloodlib.detection.transforms``.
    Evaluation: ``tta_views`` flips of each image whose detections are fused (1 = off, 2, 4;
    fused at ``tta_iou``, see ``bloodlib.detection.tta``); ``score_threshold`` for the
    precision/recall columns of Table 2;
    ``bootstrap_samples`` resamples of the test images for the 95 % CIs; ``timing_images``
    images timed per model. HSV baseline: ``bloodlib.detection.baseline.HSVThresholds``.
    """

    split: str
    split_seed: int
    train_images: int
    val_images: int
    test_images: int

    vgg16_width: float
    alexnet_width: float
    batch_norm: bool
    pretrained: bool
    anchor_scales: list[float]
    anchor_aspect_ratios: list[float]
    match_iou: float

    vgg16_epochs: int
    alexnet_epochs: int
    batch_size: int
    optimizer: str
    lr: float
    momentum: float
    beta2: float
    weight_decay: float
    final_lr_fraction: float
    warmup_epochs: float
    grad_clip: float
    eval_every: int
    seed: int
    num_threads: int
    precision: str
    num_workers: int

    photometric_p: float
    zoom_out_p: float
    zoom_out_max: float
    iou_crop_p: float
    hflip_p: float
    vflip_p: float

    tta_views: int
    tta_iou: float
    score_threshold: float
    bootstrap_samples: int
    timing_images: int

    hsv_hue_low: int
    hsv_hue_high: int
    hsv_sat_low: int
    hsv_val_low: int
    hsv_val_high: int
    hsv_open_kernel: int
    hsv_close_kernel: int
    hsv_min_area: int
    hsv_box_scale: float

    def __post_init__(self) -> None:
        """Value checks (types, missing and unknown keys are checked by :func:`bloodlib.params.build`)."""
        check_values(
            "DetectionParams",
            [
                (self.tta_views in (1, 2, 4), f"tta_views must be 1 (off), 2 or 4, got {self.tta_views!r}"),
                (0 < self.tta_iou <= 1, f"tta_iou must be in (0, 1], got {self.tta_iou!r}"),
                precision_check(self.precision),
            ],
        )
