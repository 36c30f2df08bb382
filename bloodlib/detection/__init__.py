"""Task 1: detecting and counting blood cells (RBC, WBC, platelets) on BCCD.

Modules, one concern each:

- :mod:`~bloodlib.detection.data`: VOC parsing, BCCD's splits, the torch ``Dataset``;
- :mod:`~bloodlib.detection.transforms`: box-aware SSD augmentation (``transforms.v2``);
- :mod:`~bloodlib.detection.backbones`: VGG16 and AlexNet SSD backbones with a ``width`` multiplier;
- :mod:`~bloodlib.detection.model`: SSD300 from torchvision's ``SSD``/``DefaultBoxGenerator``/``SSDHead``;
- :mod:`~bloodlib.detection.engine`: ``train_one_epoch``, ``predict``, ``evaluate``, ``fit`` (checkpoints, resume);
- :mod:`~bloodlib.detection.tta`: predictions fused over flipped views of each image;
- :mod:`~bloodlib.detection.train`: the two SSDs from the notebook's parameters, through the model cache;
- :mod:`~bloodlib.detection.baseline`: the paper's unsupervised HSV threshold for WBCs;
- :mod:`~bloodlib.detection.metrics`: AP (torchmetrics), precision/recall, counting errors, bootstrap;
- :mod:`~bloodlib.detection.evaluation`: the report's tables (Table 2, counts, targets, summary);
- :mod:`~bloodlib.detection.timing`, :mod:`~bloodlib.detection.plots`, :mod:`~bloodlib.detection.paper`.

Imports are kept out of this file so that ``bloodlib.detection.params`` loads without torch.
"""
