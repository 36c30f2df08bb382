"""The seed paper's Task 1 numbers (Table 2 and the HSV baseline's accuracy), for side-by-side tables.

Read from the package's transcription (:func:`bloodlib.paper.paper_results`, section
``task1_detection``): BCCD, a random 75/25 split, SSD300 with ImageNet-pretrained backbones,
150 epochs on a GPU. The paper does not state its AP definition, score threshold or IoU.
None = not reported.
"""

from __future__ import annotations

from bloodlib.paper import paper_results

#: Our model name -> the key of its Table 2 entry in ``paper_results.yaml``.
TABLE2_KEYS: dict[str, str] = {"AlexNet-SSD300": "alexnet_ssd300", "VGG16-SSD300": "vgg16_ssd300"}


def paper_table2() -> dict[str, dict]:
    """Our model name -> the paper's Table 2 entry (``precision``, ``recall`` per class; ``mAP``)."""
    task1 = paper_results("task1_detection")
    return {name: task1[key] for name, key in TABLE2_KEYS.items()}


def paper_hsv_wbc_accuracy() -> float:
    """The share of WBCs the paper's HSV segmentation found ("around 40 %")."""
    return float(paper_results("task1_detection")["hsv_segmentation_wbc_accuracy"])
