"""WBC subtype images beyond BCCD: the ``pbc`` data set (Acevedo et al. 2020), a second source.

``pbc`` (``bloodlib data list``) holds 2,400 single-WBC images, 360x363 JPEG, 600 per class in
``<CLASS>/<name>.jpg`` folders named like dataset2-master's (:data:`~.data.CLASSES`):
CellaVision DM96, May-Grünwald-Giemsa stain, Hospital Clinic of Barcelona -- a different stain
and scanner from BCCD, for training on a second source and for cross-source evaluation.

PBC has no patient, slide or donor ids: every image is its own group and :func:`pbc_split`
splits per image. Images of one donor or slide can look alike, so accuracy on such a split is
optimistic for other labs; it is not evidence of generalisation to unseen labs.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bloodlib.classification.data import CLASSES

#: What the ``source`` column says for PBC images.
PBC_SOURCE = "PBC"
#: Names of :func:`pbc_split`'s parts, in the order of its ``fractions``.
PBC_PARTS = ("train", "val", "test")


def pbc_index(pbc_root: Path) -> pd.DataFrame:
    """All ``pbc`` images: ``label, path, source, group``, one row per file, sorted by label and name.

    ``label`` is the class folder (one of :data:`~.data.CLASSES`), ``path`` the JPEG,
    ``source`` ``"PBC"`` and ``group`` ``"PBC/<file stem>"``: one group per image, as PBC has
    no patient ids. (In :func:`~.data.dataset2_index`, ``source`` and ``group`` are BCCD image
    numbers; cast ``group`` to ``str`` before grouping a table that combines both.)

    Raises:
        FileNotFoundError: a class folder is missing.
        ValueError: a class folder holds no ``*.jpg``.
    """
    root = Path(pbc_root)
    rows = []
    for label in CLASSES:
        folder = root / label
        if not folder.is_dir():
            raise FileNotFoundError(f"class folder {folder} not found")
        paths = sorted(folder.glob("*.jpg"))
        if not paths:
            raise ValueError(f"no *.jpg in {folder}")
        rows += [(label, path, PBC_SOURCE, f"{PBC_SOURCE}/{path.stem}") for path in paths]
    return pd.DataFrame(rows, columns=["label", "path", "source", "group"])


def pbc_split(
    index: pd.DataFrame, *, seed: int, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
) -> pd.DataFrame:
    """``index`` (from :func:`pbc_index`) with a ``split`` column: a seeded split stratified by label.

    Per image, since PBC has no donor ids (see the module notes). With the default fractions
    and 600 images per class: 360 train, 120 val, 120 test per class. Columns come out as
    :func:`~.data.dataset2_index`'s: ``split, label, path, source, group``.

    Args:
        index: one row per image, with a ``label`` column.
        seed: the shuffle's seed (same seed, same split).
        fractions: shares of ``train, val, test``; positive, summing to 1.

    Raises:
        ValueError: ``fractions`` are not three positive shares summing to 1.
    """
    from sklearn.model_selection import train_test_split

    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be three positive shares of train, val, test summing to 1, got {fractions}")
    train_share, val_share, test_share = fractions
    rest, test = train_test_split(index.index, test_size=test_share, stratify=index["label"], random_state=seed)
    train, val = train_test_split(
        rest, test_size=val_share / (train_share + val_share), stratify=index.loc[rest, "label"], random_state=seed
    )
    split = pd.Series("", index=index.index)
    for part, rows in zip(PBC_PARTS, (train, val, test)):
        split[rows] = part
    return index.assign(split=split)[["split", "label", "path", "source", "group"]]
