"""Task 2: white-blood-cell subtypes (neutrophil, lymphocyte, monocyte, eosinophil) with eight CNNs.

Modules, in pipeline order:

- :mod:`.data` -- dataset2-master index, source images, grouped (leakage-free) validation split;
- :mod:`.bccd` -- BCCD WBC boxes with their subtype (the "what the pipeline will see" test set);
- :mod:`.crops` -- the one crop policy: any WBC box (annotated, detected or located by colour)
  -> classifier input; the smear pipeline calls :meth:`.crops.CropPolicy.classifier_input`;
- :mod:`.canvases` -- crops of whole image sets, cached;
- :mod:`.transforms` -- on-the-fly augmentation (``transforms.v2``) and the evaluation transform;
- :mod:`.models` -- the eight networks from one factory, :func:`.models.build_model`;
- :mod:`.engine` -- class-balanced training with checkpoints and resume, prediction;
- :mod:`.train` -- parameters -> data -> trained models (cached); ``bloodlib train wbc``;
- :mod:`.metrics`, :mod:`.evaluation` -- Table 3 with source-grouped bootstrap intervals;
- :mod:`.complexity`, :mod:`.features`, :mod:`.summaries`, :mod:`.plots` -- the report's extras.
"""

import os as _os
import sys as _sys

# OpenMP threads that spin while waiting make PyTorch 3-15x slower on a CPU shared with other
# jobs (measured here: ResNet50 training 1.4 vs 20 images/s on 2 shared cores). Sleeping
# waiters cost little on an idle machine. OpenMP reads this once, when torch is first loaded,
# so it only takes effect if this package is imported before torch; a user's setting wins.
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
