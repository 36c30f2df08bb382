"""Models that hold beyond BCCD (notebook ``05_generalisation``, the default of ``bloodlib analyze``).

- :mod:`.params`: the notebook's parameters (``params/<profile>/05_generalisation.yaml``);
- :mod:`.detector`: the general detector -- BCCD (complete boxes), PBC and Raabin fields at a
  canonical cell scale (:mod:`bloodlib.detection.scaled`), selected on their validation splits;
- :mod:`.classifier`: the general WBC-subtype classifier -- dataset2 TRAIN and PBC, stain-normalised;
- :mod:`.evaluation`: source x source tables, count errors against complete labels, scale errors.
"""
