"""Settings of a process that runs models, in one place: OpenMP's waiting policy and torch's threads.

OpenMP threads that spin while they wait make PyTorch 3-15x slower on a CPU shared with other
jobs (measured here: ResNet50 training 1.4 vs 20 images/s on 2 shared cores); sleeping waiters
cost little on an idle machine. So every compute process gets :data:`COMPUTE_ENV`.

OpenMP reads its environment once, when torch is first loaded, so the environment has to be set
before ``import torch``:

- the ``bloodlib`` command calls :func:`configure` first thing (:func:`bloodlib.cli.main`),
  and so does ``bench/pipeline_speed.py``;
- the report runner calls it before it starts notebook kernels, which inherit its environment
  (:func:`bloodlib.report.runner.run_reports`);
- for JupyterLab, ``bloodlib kernel`` (run by ``make env``) writes it into the ``bloodlib``
  kernel's ``kernel.json``.

Importing this module (or any of bloodlib) sets nothing.
"""

from __future__ import annotations

import os

#: Environment of a compute process; values already set in the environment win.
COMPUTE_ENV: dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE"}


def configure(*, threads: int | None = None) -> None:
    """Put :data:`COMPUTE_ENV` into ``os.environ`` where unset and, given ``threads``, set torch's
    intra-op thread count (``torch.set_num_threads``).

    The environment reaches OpenMP only if this runs before torch is first imported; child
    processes started afterwards (notebook kernels, DataLoader workers) inherit it either way.

    Raises:
        ValueError: ``threads`` < 1.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    for name, value in COMPUTE_ENV.items():
        os.environ.setdefault(name, value)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
