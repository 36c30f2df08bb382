"""The seed paper's Task 1 numbers (Table 2 and the HSV baseline's accuracy), for side-by-side tables.

Read from the package's transcription (:func:`bloodlib.paper.paper_results`, section
``task1_detection``): BCCD, a random 75/25 split, SSD300 with ImageNet-pretrained backbones,
150 epochs on a GPU. The paper does not state its AP definition, score threshold or IoU.
None = not reported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bloodlib.paper import paper_results

if TYPE_CHECKING:
    from bloodlib.detection.params import DetectionParams

#: Our model name -> the key of its Table 2 entry in ``paper_results.yaml``.
TABLE2_KEYS: dict[str, str] = {"AlexNet-SSD300": "alexnet_ssd300", "VGG16-SSD300": "vgg16_ssd300"}


def paper_table2() -> dict[str, dict]:
    """Our model name -> the paper's Table 2 entry (``precision``, ``recall`` per class; ``mAP``)."""
    task1 = paper_results("task1_detection")
    return {name: task1[key] for name, key in TABLE2_KEYS.items()}


def paper_hsv_wbc_accuracy() -> float:
    """The share of WBCs the paper's HSV segmentation found ("around 40 %")."""
    return float(paper_results("task1_detection")["hsv_segmentation_wbc_accuracy"])


#: The paper's models beside ours, as its text describes them (Table 2's rows and the HSV baseline).
PAPER_MODELS: dict[str, str] = {
    "VGG16-SSD300": "SSD300-VGG16, ImageNet-pretrained, 150 epochs on a GPU",
    "AlexNet-SSD300": "SSD300-AlexNet, ImageNet-pretrained, 150 epochs on a GPU",
    "HSV baseline": "OpenCV HSV colour threshold (thresholds not given)",
}


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def model_descriptions(p: DetectionParams) -> dict[str, dict[str, str]]:
    """Per model name (``VGG16-SSD300``, ``AlexNet-SSD300``, ``HSV baseline``): what ``ours`` is with the
    notebook's parameters ``p``, what the ``paper``'s is, and what ``differs`` between them, for every
    row compared with the paper."""
    widths = {"vgg16": p.vgg16_width, "alexnet": p.alexnet_width}
    epochs = {"vgg16": p.vgg16_epochs, "alexnet": p.alexnet_epochs}
    batch_norm, pretrained, split, tta_views = p.batch_norm, p.pretrained, p.split, p.tta_views
    init = "ImageNet-pretrained" if pretrained else "from scratch"
    split_text = "BCCD's official train/val/test split" if split == "official" else "a seeded random 75/25 split"
    views = f"{tta_views} flipped views fused per test image" if tta_views > 1 else "each image predicted once"
    common = [
        f"{split_text} (paper: its own random 75/25 split)",
        "AP = COCO 101-point at IoU 0.5 (paper: AP definition not stated)",
    ]
    out = {}
    for backbone, name, arch in (("vgg16", "VGG16-SSD300", "VGG16"), ("alexnet", "AlexNet-SSD300", "AlexNet")):
        width = widths[backbone]
        bn = "-BN" if batch_norm else ""
        differs = []
        if width != 1.0:
            differs.append(f"backbone at width {width:g} (every channel count x {width:g})")
        if batch_norm:
            differs.append("BatchNorm after every convolution")
        if not pretrained:
            differs.append("random initialisation, no ImageNet weights")
        if epochs[backbone] != 150:
            differs.append(f"{_epochs(epochs[backbone])} (paper: 150)")
        differs += [views] if tta_views > 1 else []
        out[name] = {
            "ours": f"SSD300, {arch}{bn} backbone at width {width:g}, {init}, {_epochs(epochs[backbone])}",
            "paper": PAPER_MODELS[name],
            "differs": "; ".join(differs + common),
        }
    out["HSV baseline"] = {
        "ours": f"HSV threshold + opening/closing, box {p.hsv_box_scale:g}x the nucleus (bloodlib.detection.baseline)",
        "paper": PAPER_MODELS["HSV baseline"],
        "differs": "our thresholds and morphology (the paper gives none); scored as the share of annotated test "
        "WBCs found at IoU 0.5 (paper: 'accuracy', undefined); " + common[0],
    }
    return out
