"""bloodlib: reproducible reports for automated blood-smear analysis.

The package holds all logic; the notebooks in ``notebooks/`` only call into it.
Sub-packages, one concern each:

- :mod:`bloodlib.data` -- data registry, downloads, local copies (``BLOODLIB_DATA``)
- :mod:`bloodlib.params` -- parameter schemas and the ``quick``/``cpu``/``paper`` profiles
- :mod:`bloodlib.report` -- papermill + nbconvert report runner and the report index
- :mod:`bloodlib.diagnosis` -- Task 3, COVID-19 from routine blood counts
"""

__version__ = "0.1.0"
