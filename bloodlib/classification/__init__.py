"""Task 2: white-blood-cell subtypes (neutrophil, lymphocyte, monocyte, eosinophil) with eight CNNs.

Modules, in pipeline order:

- :mod:`.classes` -- the four subtypes and dataset2-master's splits;
- :mod:`.sourcemap` -- rebuilding which BCCD original each dataset2-master image was made from;
- :mod:`.data` -- dataset2-master index, source images, grouped (leakage-free) validation split;
- :mod:`.bccd` -- BCCD WBC boxes with their subtype (the "what the pipeline will see" test set);
- :mod:`.crops` -- the one crop policy: any WBC box (annotated, detected or located by colour)
  -> classifier input; the smear pipeline calls :meth:`.crops.CropPolicy.classifier_inputs`;
- :mod:`.canvases` -- crops of whole image sets, cached;
- :mod:`.transforms` -- on-the-fly augmentation (``transforms.v2``) and the evaluation transform;
- :mod:`.models` -- the eight networks from one factory, :func:`.models.build_model`;
- :mod:`.engine` -- class-balanced training with checkpoints and resume, prediction;
- :mod:`.train` -- parameters -> data -> trained models (cached); ``bloodlib train wbc``;
- :mod:`.metrics`, :mod:`.evaluation` -- Table 3 with source-grouped bootstrap intervals;
- :mod:`.complexity`, :mod:`.features`, :mod:`.summaries`, :mod:`.plots` -- the report's extras.
"""
