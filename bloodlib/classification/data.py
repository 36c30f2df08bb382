"""dataset2-master (Kaggle "blood-cells"): image index, source images, grouped validation split.

TRAIN's ~10k images are augmented copies of only 277 BCCD originals, TEST's 2,487 of 71
(see ``blood-cells/SOURCE.md``). A validation split by *image* would put copies of the same
source cell on both sides and measure memorisation; :func:`grouped_split` splits by source
image instead, with overlapping views of one smear (:data:`NEAR_DUPLICATE_PAIRS`) kept
together. The source of every image comes from ``dataset2-master_source_map.csv``, a derived
file (SIFT matching against the BCCD originals) that lives next to ``dataset2-master/`` in
the local data folder but is not part of the upstream data set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

CLASSES = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")
SPLITS = ("TRAIN", "TEST", "TEST_SIMPLE")
SOURCE_MAP = "dataset2-master_source_map.csv"

#: Pairs of BCCD image numbers showing overlapping fields of one smear: >= 12 RANSAC inliers
#: of a similarity transform with unit scale (+-2%) between SIFT keypoints of the 320x240
#: copies (sensor dust gives many more matches, but with degenerate transforms). Includes
#: the four pairs named in ``BCCD/SOURCE.md`` (00227/00260, 00382/00395, 00204/00277, 00230/00257).
NEAR_DUPLICATE_PAIRS = (
    (37, 38), (165, 193), (166, 193), (204, 277), (205, 276), (206, 278), (223, 263), (226, 261),
    (227, 260), (229, 258), (230, 257), (231, 256), (232, 255), (236, 253), (239, 240), (242, 249),
    (243, 250), (244, 247), (248, 249), (381, 397), (382, 395), (384, 393), (386, 391),
)  # fmt: skip


class SourceMapMissingError(FileNotFoundError):
    """``dataset2-master_source_map.csv`` is not next to ``dataset2-master/``."""


def source_map_path(blood_cells_dir: Path) -> Path:
    return Path(blood_cells_dir) / SOURCE_MAP


def load_source_map(blood_cells_dir: Path) -> pd.DataFrame:
    """The source map: one row per dataset2 image (``split, cls, fn, srcid, confident, ...``).

    Raises:
        SourceMapMissingError: the file is missing; the message says where it is expected.
    """
    path = source_map_path(blood_cells_dir)
    if not path.is_file():
        raise SourceMapMissingError(
            f"{SOURCE_MAP} not found at {path}. It is a derived file (which BCCD original each "
            "dataset2-master image was augmented from), not part of the upstream blood-cells data set; "
            "copy it from the project's shared data folder (shared/data/blood-cells/) next to "
            "dataset2-master/ -- without it no leakage-free validation split can be built"
        )
    frame = pd.read_csv(path)
    missing = {"split", "cls", "fn", "srcid"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    return frame


def near_duplicate_groups(sources: np.ndarray) -> np.ndarray:
    """Group id per source image: the smallest image number among its near-duplicates."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for a, b in NEAR_DUPLICATE_PAIRS:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(int(s)) for s in sources], dtype=np.int64)


def dataset2_index(blood_cells_dir: Path) -> pd.DataFrame:
    """All dataset2-master images: ``split, label, path, source, group`` (one row per file).

    ``source`` is the BCCD image number the copy was made from, ``group`` merges near-duplicates.

    Raises:
        SourceMapMissingError: see :func:`load_source_map`.
        ValueError: an image on disk has no source-map row, or the labels disagree.
    """
    root = Path(blood_cells_dir) / "dataset2-master" / "images"
    rows = [
        (split, label, path)
        for split in SPLITS
        for label in CLASSES
        for path in sorted((root / split / label).glob("*.jpeg"))
    ]
    if not rows:
        raise ValueError(f"no images under {root}/{{{','.join(SPLITS)}}}/<class>/*.jpeg")
    files = pd.DataFrame(rows, columns=["split", "label", "path"])
    files["fn"] = files["path"].map(lambda p: p.name)
    smap = load_source_map(blood_cells_dir).rename(columns={"cls": "label"})
    index = files.merge(smap[["split", "label", "fn", "srcid"]], on=["split", "label", "fn"], how="left")
    if index["srcid"].isna().any():
        unmatched = index.loc[index["srcid"].isna(), "path"].head(3).tolist()
        raise ValueError(f"{index['srcid'].isna().sum()} image(s) have no row in {SOURCE_MAP}, e.g. {unmatched}")
    index["source"] = index["srcid"].astype(np.int64)
    index["group"] = near_duplicate_groups(index["source"].to_numpy())
    return index[["split", "label", "path", "source", "group"]].reset_index(drop=True)


def grouped_split(
    train: pd.DataFrame, *, val_fraction: float, seed: int, keep_in_train: set[int] | frozenset[int] = frozenset()
) -> pd.DataFrame:
    """Assign each TRAIN row to ``subset`` "train" or "val" by group, stratified by class.

    Per class, ``round(val_fraction * n_groups)`` groups (at least one) go to validation, drawn
    in a seeded random order that skips ``keep_in_train``: pass the groups that also occur in a
    test set (dataset2's TEST meets TRAIN in two near-duplicate pairs), so that model selection
    never looks at views of a test cell. A group spanning two classes is decided once, for the
    class where it is drawn first. No source image and no group is ever on both sides.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    chosen: set[int] = set()
    for label in CLASSES:
        groups = np.array(sorted(train.loc[train["label"] == label, "group"].unique()))
        candidates = [int(g) for g in rng.permutation(groups) if int(g) not in keep_in_train]
        if len(groups) < 2 or not candidates:
            raise ValueError(f"class {label} has {len(groups)} source group(s), {len(candidates)} eligible; need 2")
        n_val = min(len(groups) - 1, len(candidates), max(1, round(val_fraction * len(groups))))
        chosen.update(candidates[:n_val])
    out = train.copy()
    out["subset"] = np.where(out["group"].isin(chosen), "val", "train")
    return out


def subsample_per_group(
    frame: pd.DataFrame, max_per_group: int | None, seed: int, column: str = "source"
) -> pd.DataFrame:
    """At most ``max_per_group`` seeded random rows per ``column`` value (None: all rows)."""
    if max_per_group is None:
        return frame
    if max_per_group < 1:
        raise ValueError(f"max_per_group must be >= 1 or None, got {max_per_group}")
    shuffled = frame.sample(frac=1.0, random_state=seed)
    return shuffled.groupby(column, sort=False).head(max_per_group).sort_index()
