"""The four WBC subtypes the classifiers tell apart, and dataset2-master's upstream splits.

The lowest module of :mod:`bloodlib.classification`: the folder layout
``dataset2-master/images/<split>/<class>/`` that both :mod:`.data` (the image index) and
:mod:`.sourcemap` (the source-map rebuild) read, so neither has to import the other for it.
"""

from __future__ import annotations

#: Subtype names, in the order of every classifier's outputs (dataset2-master's folder names).
CLASSES = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")
#: dataset2-master's image folders.
SPLITS = ("TRAIN", "TEST", "TEST_SIMPLE")
