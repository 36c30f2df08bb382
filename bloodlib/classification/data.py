"""dataset2-master (Kaggle "blood-cells"): image index, source images, grouped validation split.

TRAIN's ~10k images are augmented copies of only 277 BCCD originals, TEST's 2,487 of 71
(see ``blood-cells/SOURCE.md``). A validation split by *image* would put copies of the same
source cell on both sides and measure memorisation; :func:`grouped_split` splits by source
image instead, with overlapping views of one smear (:data:`NEAR_DUPLICATE_PAIRS`) and the
candidate sources of copies whose source is uncertain (:data:`UNCERTAIN_SOURCE_PAIRS`) kept
together. The source of every image comes from ``dataset2-master_source_map.csv``, a derived
file (SIFT matching against the BCCD originals, :mod:`.sourcemap`) that is not part of the
upstream data set: the project's shared data folder has it next to ``dataset2-master/``;
elsewhere (e.g. after ``bloodlib data fetch blood-cells``) :func:`source_map_path` rebuilds it
once from the images into the user cache (a few minutes), never into the data folder.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bloodlib.classification import sourcemap
from bloodlib.classification.classes import CLASSES
from bloodlib.paths import cache_dir

SOURCE_MAP = "dataset2-master_source_map.csv"

#: Pairs of BCCD image numbers showing overlapping fields of one smear: every pair that
#: :func:`bloodlib.detection.overlap.bccd_overlaps` finds among the BCCD originals (>= 10 RANSAC
#: inliers of a similarity transform with unit scale, +-2%, between SIFT keypoints at 320x240; a
#: test recomputes it). Includes the four pairs named in ``BCCD/SOURCE.md`` (00227/00260,
#: 00382/00395, 00204/00277, 00230/00257); (107, 108) and (228, 259) were added with that detector
#: (an earlier list, matched on dataset2's copies, missed them).
NEAR_DUPLICATE_PAIRS = (
    (37, 38),
    (107, 108),
    (165, 193),
    (166, 193),
    (204, 277),
    (205, 276),
    (206, 278),
    (223, 263),
    (226, 261),
    (227, 260),
    (228, 259),
    (229, 258),
    (230, 257),
    (231, 256),
    (232, 255),
    (236, 253),
    (239, 240),
    (242, 249),
    (243, 250),
    (244, 247),
    (248, 249),
    (381, 397),
    (382, 395),
    (384, 393),
    (386, 391),
)

#: Pairs of source images that a dataset2 copy *not* marked ``confident`` in the source map may
#: come from (:func:`.sourcemap.uncertain_source_pairs` on the shared map; a test recomputes it).
#: Conservative groups join them, so an uncertain copy never sits on the other side of a split
#: from the original it may really show. Only (233, 254) is not also a near-duplicate pair.
UNCERTAIN_SOURCE_PAIRS = (
    (204, 277),
    (227, 260),
    (229, 258),
    (230, 257),
    (233, 254),
    (382, 395),
)


class SourceMapMissingError(FileNotFoundError):
    """The source map is neither next to ``dataset2-master/`` nor cached, and cannot be rebuilt
    (no dataset2-master images, or the BCCD originals are unavailable)."""


def cached_source_map_path(blood_cells_dir: Path) -> Path:
    """Where a rebuilt source map is cached: ``<cache>/derived/blood-cells/<stem>-<digest>.csv``.

    The digest (:func:`.sourcemap.input_digest`) covers the matching method and the names and
    sizes of the dataset2 images, so a changed method or data set gets a fresh rebuild.
    """
    name = f"{Path(SOURCE_MAP).stem}-{sourcemap.input_digest(blood_cells_dir)}.csv"
    return cache_dir() / "derived" / "blood-cells" / name


def _missing(blood_cells_dir: Path, why: str) -> SourceMapMissingError:
    return SourceMapMissingError(
        f"{SOURCE_MAP} not found at {Path(blood_cells_dir) / SOURCE_MAP} and it cannot be rebuilt: {why}. "
        "It is a derived file (which BCCD original each dataset2-master image was augmented from), "
        "not part of the upstream blood-cells data set; without it no leakage-free validation split "
        "can be built. Copy it from the project's shared data folder (shared/data/blood-cells/) next "
        "to dataset2-master/, or make BCCD available (`bloodlib data fetch BCCD`, or BLOODLIB_DATA) "
        "so that bloodlib can rebuild it"
    )


def rebuild_source_map(blood_cells_dir: Path, target: Path, *, progress: bool = True) -> Path:
    """Rebuild the source map with :func:`.sourcemap.build_source_map`, write it atomically to
    ``target`` and return ``target``. Notes the rebuild and its duration on stderr.

    Raises:
        SourceMapMissingError: BCCD is not available (not local, download failed).
    """
    from bloodlib.data import DataNotFoundError, locate
    from bloodlib.fsutil import atomic_write_text

    try:
        bccd = locate("BCCD")
    except DataNotFoundError as err:
        raise _missing(blood_cells_dir, f"the BCCD originals are not available ({err})") from err
    print(
        f"{SOURCE_MAP} is not next to dataset2-master/: rebuilding it from the images "
        f"(SIFT matching against BCCD, a few minutes) into {target}",
        file=sys.stderr,
        flush=True,
    )
    start = time.perf_counter()
    frame = sourcemap.build_source_map(blood_cells_dir, bccd, progress=progress)
    atomic_write_text(target, frame.to_csv(index=False))
    print(f"{SOURCE_MAP} rebuilt in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return target


def source_map_path(blood_cells_dir: Path, *, progress: bool = True) -> Path:
    """The source map file actually used (hash this one for cache keys), rebuilt first if need be.

    Looks, in order, for (a) ``blood_cells_dir/dataset2-master_source_map.csv`` (the shared
    copy wins when present), (b) a rebuilt copy in the user cache
    (:func:`cached_source_map_path`), else (c) rebuilds it there (:func:`rebuild_source_map`).
    Never writes into ``blood_cells_dir``.

    Raises:
        SourceMapMissingError: none found and a rebuild is impossible.
    """
    shared = Path(blood_cells_dir) / SOURCE_MAP
    if shared.is_file():
        return shared
    images = Path(blood_cells_dir) / "dataset2-master" / "images"
    if not images.is_dir():
        raise _missing(blood_cells_dir, f"no dataset2-master images at {images}")
    cached = cached_source_map_path(blood_cells_dir)
    if cached.is_file():
        return cached
    return rebuild_source_map(blood_cells_dir, cached, progress=progress)


def load_source_map(blood_cells_dir: Path, *, progress: bool = True) -> pd.DataFrame:
    """The source map: one row per dataset2 image (``split, cls, fn, srcid, confident, ...``).

    Read from :func:`source_map_path` (shared copy, else cached rebuild, else a fresh rebuild,
    with progress bars when ``progress``).

    Raises:
        SourceMapMissingError: not found and cannot be rebuilt; the message says what to do.
        ValueError: the file lacks a required column.
    """
    path = source_map_path(blood_cells_dir, progress=progress)
    frame = pd.read_csv(path)
    missing = {"split", "cls", "fn", "srcid"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    return frame


def near_duplicate_groups(sources: np.ndarray, *, uncertain: bool = True) -> np.ndarray:
    """Group id per source image: the smallest image number joined to it by :data:`NEAR_DUPLICATE_PAIRS`
    and, with ``uncertain`` (the conservative groups every split uses), :data:`UNCERTAIN_SOURCE_PAIRS`."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for a, b in NEAR_DUPLICATE_PAIRS + (UNCERTAIN_SOURCE_PAIRS if uncertain else ()):
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
    files = sourcemap.dataset2_files(blood_cells_dir).rename(columns={"cls": "label"})
    source_map = load_source_map(blood_cells_dir).rename(columns={"cls": "label"})
    index = files.merge(source_map[["split", "label", "fn", "srcid"]], on=["split", "label", "fn"], how="left")
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
