"""The smear pipeline (the paper's Figure 1) and ``bloodlib analyze``.

Fields of view of a smear -> detections (SSD300, Task 1) -> WBC subtypes (Task 2) -> counts,
differential and scale-free ratios per sample -> a COVID-19 probability from a model trained on
OSR's scale-free features (Task 3's classifiers). **Research tool, not a diagnostic device.**

Modules, one concern each (imported on demand: torch is heavy):

- :mod:`~bloodlib.pipeline.params` -- :class:`PipelineParams`, the notebook's and the CLI's parameters
- :mod:`~bloodlib.pipeline.io` -- which files form which sample; reading and validating one image
- :mod:`~bloodlib.pipeline.models` -- the trained models from the cache, counting thresholds
- :mod:`~bloodlib.pipeline.infer` -- batched detection and WBC classification (DataLoader decoding)
- :mod:`~bloodlib.pipeline.features` -- scale-free features shared by lab counts and images
- :mod:`~bloodlib.pipeline.aggregate` -- per-sample counts, differential, ratios
- :mod:`~bloodlib.pipeline.covid` -- the scale-free COVID-19 model: nested CV and the fitted model
- :mod:`~bloodlib.pipeline.annotate` -- annotated PNGs
- :mod:`~bloodlib.pipeline.outputs` -- deterministic, atomic CSV/JSON writers
- :mod:`~bloodlib.pipeline.analyze` -- ``bloodlib analyze`` end to end
- :mod:`~bloodlib.pipeline.evaluation` -- the notebook's evaluation on BCCD (pseudo-samples, chain confusion)
- :mod:`~bloodlib.pipeline.speed` -- the throughput benchmark (``bench/pipeline_speed.py``)
"""

NOTICE = "Research tool, not a diagnostic device."
