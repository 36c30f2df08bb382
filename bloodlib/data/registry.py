"""The data registry: one entry per public data set, with pinned sources and checksums.

Resolution order for a data set folder (:func:`locate`):

1. ``$BLOODLIB_DATA/<name>`` -- a local copy laid out like the project's ``shared/data``;
2. ``<user cache>/data/<name>`` -- where :func:`fetch` puts downloads;
3. a download from the entry's sources, tried in order (:func:`fetch`).

Downloads land in a staging folder next to the target, are verified file by file
against the registry's checksums, and only then renamed into place, so an
interrupted or corrupt download never leaves a folder that looks complete.
:func:`repair` (``bloodlib data fetch``) re-fetches a cached copy that fails verification.
"""

from __future__ import annotations

import base64
import csv
import errno
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bloodlib.data.checks import Check, full_problems, quick_problems
from bloodlib.data.download import DownloadError, download_file, extract_archive
from bloodlib.fsutil import replace_dir, staging_dir
from bloodlib.paths import cache_dir, local_data_dir


class DataNotFoundError(FileNotFoundError):
    """A data set is not available locally and could not be downloaded."""


@dataclass(frozen=True)
class Source:
    """One way to obtain a complete data set folder.

    Attributes:
        url: what to download.
        sha256: sha256 of the downloaded bytes, or None where the host may re-generate
            them (GitHub archives); the extracted files are always checked.
        mapping: for archives, (archive prefix, folder prefix) pairs to extract;
            empty for a single file.
        filename: for a single file, its path inside the data set folder.
        auth: ``"kaggle"`` if the host needs the user's Kaggle API credentials.
        members: for archives that hold more than the data set: a function returning
            ``(archive member, path in the folder)`` pairs of exactly the files to take
            (read from a manifest in ``bloodlib/data/manifests/`` when a download starts,
            never at import); extracted along with ``mapping``.
        package_files: ``(manifest file, path in the folder)`` pairs copied from
            ``bloodlib/data/manifests/`` into the folder (the subset's own file lists).
    """

    url: str
    sha256: str | None = None
    mapping: tuple[tuple[str, str], ...] = ()
    filename: str = ""
    auth: str | None = None
    members: Callable[[], tuple[tuple[str, str], ...]] | None = None
    package_files: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class DatasetSpec:
    """A registered data set: where it comes from and what its folder must hold."""

    name: str
    title: str
    homepage: str
    license: str
    sources: tuple[Source, ...]
    checks: tuple[Check, ...]
    notes: tuple[str, ...] = field(default=())


_BCCD_SHA = "d272fb14cdff6e473fafeeeba32aba5f560e9e43"
_WBC_SHA = "0b22eb2084b1004d464fb5ab87adc85ab94b2079"
_CROPS_SHA = "7751031e0b41bcfdff998cbc4c698a445a60b49e"
_OSR_MIRROR_SHA = "190e8b54f3cc68c21c87de4c98a7e5859898bd52"
_EINSTEIN_MIRROR_SHA = "050c88a3b2194586c158a293aff710d95c9fb0aa"
_TXL_SHA = "056d09e45403f4d1321b99cdb2cfcc3eb605edcf"
_PBC_MIRROR_SHA = "d2e7b75e11e21df3fb39f4d1d30004381663d96a"

#: Package files that pin a subset of an upstream archive (the subset's file lists and SOURCE.md).
MANIFESTS_DIR = Path(__file__).with_name("manifests")

#: TXL-PBC's files inside GitHub's archive of the pinned commit.
_TXL_ROOT = f"TXL-PBC_Dataset-{_TXL_SHA}/TXL_PBC/"
#: Upstream TXL-PBC split folders; its split is not BCCD's (see :func:`_bccd_relabel_members`).
_TXL_SPLITS = ("train", "val", "test")
#: PBC's class folders inside GitHub's archive of the mirror: our label -> upstream folder.
_PBC_ROOT = f"Blood-Cell-Classification-{_PBC_MIRROR_SHA}/PBC_dataset_normal_DIB/"
_PBC_FOLDERS = {
    "EOSINOPHIL": "eosinophil",
    "LYMPHOCYTE": "lymphocyte",
    "MONOCYTE": "monocyte",
    "NEUTROPHIL": "neutrophil",
}


def manifest_rows(name: str) -> list[dict[str, str]]:
    """Rows of the CSV manifest ``bloodlib/data/manifests/<name>``."""
    with open(MANIFESTS_DIR / name, newline="") as handle:
        return list(csv.DictReader(handle))


def _txl_pbc_members() -> tuple[tuple[str, str], ...]:
    """The 835 staged TXL-PBC images and their label files, listed in ``txl-pbc/sources.csv``.

    Raises:
        ValueError: the manifest names a split other than train/val (the upstream test split
            is held out and never taken).
    """
    pairs = []
    for row in manifest_rows("txl-pbc/sources.csv"):
        split, image = row["split"], row["image"]
        if split not in ("train", "val"):
            raise ValueError(f"txl-pbc/sources.csv: split {split!r} of {image} is not train or val")
        label = f"{Path(image).stem}.txt"
        pairs += [
            (f"{_TXL_ROOT}images/{split}/{image}", f"images/{split}/{image}"),
            (f"{_TXL_ROOT}labels/{split}/{label}", f"labels/{split}/{label}"),
        ]
    return tuple(pairs)


def _bccd_relabel_members() -> tuple[tuple[str, str], ...]:
    """TXL-PBC's label files of the 181 BCCD train/val images, renamed to the BCCD id.

    ``bccd-relabel/mapping.csv`` names each label by its TXL-PBC file, not by TXL-PBC's split
    folder: TXL-PBC split its images anew, so the label of a BCCD train/val image can sit in
    any of TXL-PBC's train/val/test folders. Each named file is taken from whichever folder
    holds it; no other file of those folders is extracted.

    Raises:
        ValueError: the manifest names an image outside BCCD's train/val lists.
    """
    pairs = []
    for row in manifest_rows("bccd-relabel/mapping.csv"):
        if row["bccd_split"] not in ("train", "val"):
            raise ValueError(f"bccd-relabel/mapping.csv: {row['bccd_image']} is in BCCD's {row['bccd_split']!r} list")
        label = f"{Path(row['txl_image']).stem}.txt"
        pairs += [(f"{_TXL_ROOT}labels/{split}/{label}", f"labels/{row['bccd_image']}.txt") for split in _TXL_SPLITS]
    return tuple(pairs)


def _pbc_members() -> tuple[tuple[str, str], ...]:
    """The 2,400 staged PBC images listed in ``pbc/files.csv`` (the last 600 of each class folder
    in sorted file-name order; neutrophils: the last 300 band ``BNE_`` and 300 segmented ``SNE_``)."""
    return tuple(
        (f"{_PBC_ROOT}{_PBC_FOLDERS[row['label']]}/{row['file']}", f"{row['label']}/{row['file']}")
        for row in manifest_rows("pbc/files.csv")
    )


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="BCCD",
            title="BCCD: 364 smear images 640x480, VOC boxes for RBC/WBC/Platelets, official splits",
            homepage=f"https://github.com/Shenggan/BCCD_Dataset/tree/{_BCCD_SHA}",
            license="MIT",
            sources=(
                Source(
                    url=f"https://codeload.github.com/Shenggan/BCCD_Dataset/tar.gz/{_BCCD_SHA}",
                    mapping=((f"BCCD_Dataset-{_BCCD_SHA}/BCCD/", ""), (f"BCCD_Dataset-{_BCCD_SHA}/LICENSE", "LICENSE")),
                ),
            ),
            checks=(
                Check("Annotations", "3522dcf190e85603b8e1e3dad3927f7aa86076794eb45bec07cdbc461148a3a7", 364),
                Check("JPEGImages", "01a03168080b9fb2859982dc6d5a25110e7dd394da96442a3db39c32e89917c1", 364),
                Check("ImageSets", "a0b04ce541dec47d4e37c88447c1b5d0ab445572a822fb4664c91f3f4119f5a3", 4),
                Check("LICENSE", "e2b611c8f321cb03c8d1b378a343ef488b623cf714c48bee814f04fcf8ba26df"),
            ),
            notes=("14 near-duplicate image pairs (overlapping fields of one smear) exist among the originals.",),
        ),
        DatasetSpec(
            name="blood-cells",
            title="WBC subtypes (Kaggle blood-cells): dataset2-master TRAIN/TEST/TEST_SIMPLE + dataset-master/labels.csv",
            homepage=f"https://github.com/dhruvp/wbc-classification/tree/{_WBC_SHA}",
            license="no license file upstream; images derive from BCCD (MIT)",
            sources=(
                Source(
                    url=f"https://codeload.github.com/dhruvp/wbc-classification/tar.gz/{_WBC_SHA}",
                    mapping=(
                        (f"wbc-classification-{_WBC_SHA}/images/", "dataset2-master/images/"),
                        (f"wbc-classification-{_WBC_SHA}/labels.csv", "dataset2-master/labels.csv"),
                        (f"wbc-classification-{_WBC_SHA}/labels.csv", "dataset-master/labels.csv"),
                    ),
                ),
            ),
            checks=(
                Check(
                    "dataset2-master/images", "1967ca56ea00cabefc98710eba2827ed9bb8f04b7de91915bfccb05d3d9639f3", 12515
                ),
                Check("dataset2-master/labels.csv", "2a11d215cade403d4fdb02b27b914c505bf59d4879b9b911fe97830b90c4e1a2"),
                Check("dataset-master/labels.csv", "2a11d215cade403d4fdb02b27b914c505bf59d4879b9b911fe97830b90c4e1a2"),
            ),
            notes=(
                "TRAIN's ~10k images are augmented copies of 277 BCCD originals, TEST's 2,487 of 71.",
                "Kaggle's copy (paultimothymooney/blood-cells) holds the same files; this is its GitHub source.",
            ),
        ),
        DatasetSpec(
            name="bccd-wbc-crops",
            title="351 WBC crops cut from BCCD, one per image, in 5 subtype folders (optional extra)",
            homepage=f"https://github.com/apple2373/BCCD/tree/{_CROPS_SHA}",
            license="no license file upstream; derived from BCCD (MIT)",
            sources=(
                Source(
                    url=f"https://codeload.github.com/apple2373/BCCD/tar.gz/{_CROPS_SHA}",
                    mapping=(
                        (f"BCCD-{_CROPS_SHA}/BCCD_cropped/", "BCCD_cropped/"),
                        (f"BCCD-{_CROPS_SHA}/labels.csv", "labels.csv"),
                    ),
                ),
            ),
            checks=(
                Check("BCCD_cropped", "b40693535fcb111311716b3347ff46f0ce6fc174bd9bfaf98bac7cc13861d9d7", 351),
                Check("labels.csv", "2a11d215cade403d4fdb02b27b914c505bf59d4879b9b911fe97830b90c4e1a2"),
            ),
        ),
        DatasetSpec(
            name="covid-osr",
            title="San Raffaele (OSR) routine blood exams, 279 patients, SWAB target (Brinati et al. 2020)",
            homepage="https://zenodo.org/records/3886927",
            license="see the Zenodo record (often CC BY 4.0); verify before redistribution",
            sources=(
                Source(
                    url="https://zenodo.org/records/3886927/files/covid_study_v2.xlsx?download=1",
                    sha256="669e694d5827526d9daeefb70228f5d17dfe4931c5d0f18f61e1c5e48e35cd9e",
                    filename="covid_study_v2.xlsx",
                ),
                Source(
                    url=f"https://raw.githubusercontent.com/lschiesser/ba/{_OSR_MIRROR_SHA}/blood-exams/covid_study_v2.xlsx",
                    sha256="669e694d5827526d9daeefb70228f5d17dfe4931c5d0f18f61e1c5e48e35cd9e",
                    filename="covid_study_v2.xlsx",
                ),
            ),
            checks=(Check("covid_study_v2.xlsx", "669e694d5827526d9daeefb70228f5d17dfe4931c5d0f18f61e1c5e48e35cd9e"),),
            notes=("The public release has no RBC column; 5 records appear twice.",),
        ),
        DatasetSpec(
            name="covid-einstein",
            title="Hospital Israelita Albert Einstein, 5,644 patients, z-scored labs (Kaggle einsteindata4u/covid19)",
            homepage="https://www.kaggle.com/datasets/einsteindata4u/covid19",
            license="Kaggle listing; not stated upstream",
            sources=(
                Source(
                    url="https://www.kaggle.com/api/v1/datasets/download/einsteindata4u/covid19",
                    mapping=(("dataset.xlsx", "dataset.xlsx"),),
                    auth="kaggle",
                ),
                Source(
                    url=(
                        "https://raw.githubusercontent.com/MachineLearnia/Python-Machine-Learning/"
                        f"{_EINSTEIN_MIRROR_SHA}/Dataset/dataset.xlsx"
                    ),
                    sha256="354bc4c3b0d60d196df2746316577e15120a99b5e394f7b5cbecab359e2df865",
                    filename="dataset.xlsx",
                ),
            ),
            checks=(Check("dataset.xlsx", "354bc4c3b0d60d196df2746316577e15120a99b5e394f7b5cbecab359e2df865"),),
            notes=(
                "Kaggle is the official home and needs your Kaggle API credentials (KAGGLE_USERNAME and "
                "KAGGLE_KEY, or ~/.kaggle/kaggle.json). Without them bloodlib takes a public GitHub copy "
                "whose sha256 equals the Kaggle file's.",
            ),
        ),
        DatasetSpec(
            name="bccd-relabel",
            title="Complete YOLO boxes (TXL-PBC) for the 181 BCCD images of BCCD's train/val lists, named by BCCD id",
            homepage=f"https://github.com/lugan113/TXL-PBC_Dataset/tree/{_TXL_SHA}",
            license="MIT (TXL-PBC, Gan & Li 2024); the images are BCCD's (MIT)",
            sources=(
                Source(
                    url=f"https://codeload.github.com/lugan113/TXL-PBC_Dataset/tar.gz/{_TXL_SHA}",
                    members=_bccd_relabel_members,
                    package_files=(
                        ("bccd-relabel/mapping.csv", "mapping.csv"),
                        ("bccd-relabel/SOURCE.md", "SOURCE.md"),
                    ),
                ),
            ),
            checks=(
                Check("labels", "0412ab73bb4251e090c94318a23e09ee578fbea4ec4e291063f90316ed5c36dc", 181),
                Check("mapping.csv", "3bd74f8384d3fdaf3cc5fdf27440d674006b99183453241d71add8e0078e2528"),
            ),
            notes=(
                "Labels only: the images are BCCD's JPEGImages (bloodlib data fetch BCCD).",
                "TXL-PBC's labels of BCCD test images are never taken. TXL-PBC split its images anew: some of "
                "these 181 labels sit in its own test folder; only the named files are taken from it.",
            ),
        ),
        DatasetSpec(
            name="txl-pbc",
            title="TXL-PBC train/val from non-BCCD sources: 835 PBC- and Raabin-sourced fields, YOLO boxes for WBC/RBC/platelets",
            homepage=f"https://github.com/lugan113/TXL-PBC_Dataset/tree/{_TXL_SHA}",
            license="MIT",
            sources=(
                Source(
                    url=f"https://codeload.github.com/lugan113/TXL-PBC_Dataset/tar.gz/{_TXL_SHA}",
                    mapping=(
                        (f"TXL-PBC_Dataset-{_TXL_SHA}/LICENSE", "LICENSE"),
                        (f"{_TXL_ROOT}data.yaml", "data.yaml.upstream"),
                    ),
                    members=_txl_pbc_members,
                    package_files=(("txl-pbc/sources.csv", "sources.csv"), ("txl-pbc/SOURCE.md", "SOURCE.md")),
                ),
            ),
            checks=(
                Check("images", "ed8e40b7a01157f9a17737de0e4ee4b251ed37d65a20d238ebffb36c7ddc3b93", 835),
                Check("labels", "9ba5388cb4a7388dceb640864921d552aac026bbd90080441156a25360320241", 835),
                Check("sources.csv", "f7568b5123d947578653905de7ceec95b8e60137d3c0b45b3b545b08b5ca8c90"),
                Check("LICENSE", "197200e62e9f898e15a05aa8124e4d964c7df097216ffb623cab515e8624e8e9"),
                Check("data.yaml.upstream", "346ede309a540136faa507bf50a2bcbed2cbdffe1c32dc1431e311b5daf1155f"),
            ),
            notes=(
                "A subset of the upstream archive: its train/val images not taken from BCCD (sources.csv). "
                "The upstream test split is never taken.",
            ),
        ),
        DatasetSpec(
            name="pbc",
            title="PBC (Acevedo et al. 2020): 2,400 single-WBC images 360x363, 600 each of 4 subtypes (a subset)",
            homepage="https://doi.org/10.17632/snkd93bnjr.1",
            license="CC BY 4.0 (attribution: Acevedo et al., Data in Brief 30 (2020) 105474)",
            sources=(
                Source(
                    url=f"https://codeload.github.com/AuralinACC/Blood-Cell-Classification/tar.gz/{_PBC_MIRROR_SHA}",
                    members=_pbc_members,
                    package_files=(("pbc/SOURCE.md", "SOURCE.md"),),
                ),
            ),
            checks=(
                Check("EOSINOPHIL", "f835d23fb41c9cf132dcbdf3497a1d05f1d1a35403636912101662a8d565cb57", 600),
                Check("LYMPHOCYTE", "a8ac69cba3089465745e062c6a9c6f454b2984fe796fc1627edd0d84e053b7e4", 600),
                Check("MONOCYTE", "31551bb7c8060afefa52f65cebc8aa673a0b587fe9ed5581b2a139726444a8f1", 600),
                Check("NEUTROPHIL", "51f25aa656b79400257d7c3ac84e11351b755b5a1bd49cc5efd75252036692e0", 600),
            ),
            notes=(
                "The official home is Mendeley Data (doi 10.17632/snkd93bnjr.1, 17,092 images of 8 classes); "
                "bloodlib takes the 2,400 listed in its manifest from a public GitHub mirror of the same files "
                "(a ~300 MB archive).",
            ),
        ),
    )
}


def get_spec(name: str) -> DatasetSpec:
    """The registry entry ``name``; unknown names raise ``KeyError`` listing the known ones."""
    if name not in DATASETS:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def candidate_dirs(name: str) -> list[Path]:
    """Where :func:`locate` looks for ``name``, in order."""
    local = local_data_dir()
    return ([local / name] if local else []) + [cache_dir() / "data" / name]


def locate(name: str, *, download: bool = True) -> Path:
    """The folder of data set ``name``: ``BLOODLIB_DATA``, then the cache, then a download.

    Only existence and file counts are checked here (cheap); use :func:`verify`
    for a full checksum pass.

    Raises:
        DataNotFoundError: not found locally and ``download`` is False or failed.
    """
    spec = get_spec(name)
    looked = []
    for folder in candidate_dirs(name):
        problems = quick_problems(folder, spec.checks)
        if not problems:
            return folder
        looked.append(f"{folder} ({problems[0]})")
    if not download:
        raise DataNotFoundError(
            f"data set {name!r} not found; looked in: {'; '.join(looked)}. "
            f"Run `bloodlib data fetch {name}` or set BLOODLIB_DATA to a folder holding {name}/"
        )
    return fetch(name)


def kaggle_headers() -> dict[str, str] | None:
    """HTTP basic-auth headers from the user's Kaggle credentials, or None if there are none.

    A ``kaggle.json`` that cannot be read or is not ``{"username": ..., "key": ...}`` is a warning
    (naming the file) and counts as no credentials, so the next source is tried.
    """
    user, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    config = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")) / "kaggle.json"
    if not (user and key) and config.is_file():
        try:
            creds = json.loads(config.read_text(encoding="utf-8"))
            user, key = creds.get("username"), creds.get("key")
            if not (isinstance(user, str) and isinstance(key, str)):
                raise ValueError("username and key must be strings")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError) as err:
            warnings.warn(f"ignoring {config}: not usable Kaggle credentials ({err})", stacklevel=2)
            return None
    if not (user and key):
        return None
    token = base64.b64encode(f"{user}:{key}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _download_source(source: Source, staging: Path) -> None:
    """Download one source into ``staging`` (raises on any failure)."""
    headers = None
    if source.auth == "kaggle":
        headers = kaggle_headers()
        if headers is None:
            raise DownloadError(
                "Kaggle credentials not found: set KAGGLE_USERNAME and KAGGLE_KEY, or put kaggle.json in ~/.kaggle"
            )
    if not source.mapping and source.members is None:
        download_file(source.url, staging / source.filename, sha256=source.sha256, headers=headers)
        return
    mapping = source.mapping + (source.members() if source.members is not None else ())
    with tempfile.TemporaryDirectory(dir=staging.parent, prefix=".download-") as tmp:
        archive = download_file(source.url, Path(tmp) / "archive", sha256=source.sha256, headers=headers)
        extract_archive(archive, staging, mapping=mapping)
    for manifest, path in source.package_files:
        (staging / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(MANIFESTS_DIR / manifest, staging / path)


def fetch(name: str, *, target: Path | None = None, force: bool = False) -> Path:
    """Download data set ``name`` into ``target`` (default: the user cache) and verify it.

    Sources are tried in order; each goes into a fresh staging folder that is renamed
    onto ``target`` only after every checksum matched.

    Raises:
        DataNotFoundError: every source failed; the message lists why for each.
    """
    spec = get_spec(name)
    target = target or cache_dir() / "data" / name
    if not force and not quick_problems(target, spec.checks):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for source in spec.sources:
        staging = staging_dir(target.parent, f".{name}.partial-")
        try:
            _download_source(source, staging)
            problems = full_problems(staging, spec.checks)
            if problems:
                raise DownloadError(f"content differs from the registry: {'; '.join(problems)}")
            replace_dir(staging, target)
            return target
        except (DownloadError, OSError) as err:
            if isinstance(err, OSError) and err.errno in _LOCAL_ERRNOS:
                raise  # this machine's problem (disk full, permissions): another source would fail too
            failures.append(f"{source.url}: {err}")
            if len(spec.sources) > 1:
                warnings.warn(f"{name}: source failed, trying the next one: {source.url}: {err}", stacklevel=2)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    raise DataNotFoundError(f"could not fetch {name!r}:\n  " + "\n  ".join(failures) + "\n" + "\n".join(spec.notes))


#: Errors of the local file system: a fetch stops at once instead of trying the next source.
_LOCAL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)


def repair(name: str, *, force: bool = False) -> tuple[Path, str]:
    """``bloodlib data fetch NAME``: the verified folder of ``name`` and what was done, in words.

    A copy in the user cache that fails :func:`verify` is downloaded again (replaced only once the new
    download verifies); ``force`` downloads again whatever the cached copy. A copy under
    ``BLOODLIB_DATA`` that fails verification is never modified.

    Raises:
        DataNotFoundError: the download failed (the old copy is kept), or the ``BLOODLIB_DATA`` copy fails
            verification (the message says how to fix it).
    """
    spec = get_spec(name)
    cached = cache_dir() / "data" / name
    if force:
        return fetch(name, force=True), "downloaded again (--force)"
    found = next((folder for folder in candidate_dirs(name) if not quick_problems(folder, spec.checks)), None)
    if found is None:
        return fetch(name), "downloaded and verified"
    problems = full_problems(found, spec.checks)
    if not problems:
        return found, "verified"
    if found != cached:
        raise DataNotFoundError(
            f"{found} fails verification ({'; '.join(problems[:3])}); bloodlib never modifies BLOODLIB_DATA: "
            f"restore that folder, or unset BLOODLIB_DATA and run `bloodlib data fetch {name}` to download a "
            "verified copy into the user cache"
        )
    return fetch(name, force=True), f"the cached copy failed verification ({problems[0]}): downloaded again"


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify`: where the data set is and what differs from the registry."""

    name: str
    path: Path | None
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.path is not None and not self.problems

    def as_dict(self) -> dict:
        spec = get_spec(self.name)
        return {
            "name": self.name,
            "path": str(self.path) if self.path else None,
            "ok": self.ok,
            "problems": list(self.problems),
            "sha256": {check.path: check.sha256 for check in spec.checks},
        }


class DataMismatchError(ValueError):
    """A data set is missing here or its files differ from the registry (the message lists how)."""


def verify(name: str) -> VerifyResult:
    """Hash every file of data set ``name`` where :func:`locate` finds it (no download)."""
    spec = get_spec(name)
    try:
        folder = locate(name, download=False)
    except DataNotFoundError as err:
        return VerifyResult(name, None, (str(err),))
    return VerifyResult(name, folder, tuple(full_problems(folder, spec.checks)))


def verified_checksums(name: str) -> dict[str, str]:
    """The registry's sha256 of every file of data set ``name``, once the local copy matches them.

    What a trained model's cache key hashes: it changes whenever the data does.

    Raises:
        DataMismatchError: the data set is not found here, or files are missing or differ.
    """
    result = verify(name)
    if not result.ok:
        raise DataMismatchError(
            f"data set {name} at {result.path} does not match the registry:\n  " + "\n  ".join(result.problems)
        )
    return result.as_dict()["sha256"]


def fingerprint(name: str) -> str:
    """What a cache key records of data set ``name``: the sha256 of its registry checksums, once the
    local copy is verified against them (so it changes whenever the data does).

    Raises:
        DataMismatchError: the data set is not found here, or files are missing or differ.
    """
    checks = json.dumps(verified_checksums(name), sort_keys=True)
    return hashlib.sha256(checks.encode()).hexdigest()
