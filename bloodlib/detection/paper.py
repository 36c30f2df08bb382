"""The seed paper's Task 1 numbers (Table 2 and the HSV baseline's accuracy), for side-by-side tables.

Read from the package's transcription (:mod:`bloodlib.paper`): BCCD, a random 75/25 split,
SSD300 with ImageNet-pretrained backbones, 150 epochs on a GPU. The paper does not state its
AP definition, score threshold or IoU. None = not reported.
"""

from __future__ import annotations

from bloodlib.paper import paper_results

_TASK1 = paper_results("task1_detection")

#: Our model name -> the paper's Table 2 entry (precision, recall per class; mAP).
PAPER_TABLE2: dict[str, dict] = {
    "AlexNet-SSD300": _TASK1["alexnet_ssd300"],
    "VGG16-SSD300": _TASK1["vgg16_ssd300"],
}

#: "the detection accuracy is very low (around 40 %)": share of WBCs the HSV segmentation found.
PAPER_HSV_WBC_ACCURACY: float = _TASK1["hsv_segmentation_wbc_accuracy"]
