"""Content checks of a data set folder: sha256 of single files, tree digests of folders.

A tree digest is the sha256 of the lines ``"<relative posix path>\\t<sha256 of file>\\n"``
for every file under the folder, sorted by path. It pins the exact bytes of every
file (and the file list) with one short string, whatever archive they came from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from bloodlib.data.download import sha256_file


@dataclass(frozen=True)
class Check:
    """One expected file or folder inside a data set folder.

    Attributes:
        path: relative path inside the data set folder (posix).
        sha256: sha256 of the file, or the tree digest of the folder.
        n_files: 1 for a file, else the number of files under the folder.
    """

    path: str
    sha256: str
    n_files: int = 1


def list_files(folder: Path) -> list[Path]:
    """All regular files under ``folder``, sorted by relative posix path."""
    return sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.relative_to(folder).as_posix())


def tree_digest(folder: Path) -> tuple[str, int]:
    """(tree digest, number of files) of ``folder``."""
    digest = hashlib.sha256()
    files = list_files(folder)
    for path in files:
        digest.update(f"{path.relative_to(folder).as_posix()}\t{sha256_file(path)}\n".encode())
    return digest.hexdigest(), len(files)


def measure(root: Path, path: str) -> tuple[str, int]:
    """(sha256 or tree digest, number of files) of ``root / path``."""
    target = root / path
    if target.is_dir():
        return tree_digest(target)
    return sha256_file(target), 1


def quick_problems(root: Path, checks: tuple[Check, ...]) -> list[str]:
    """Cheap completeness test (existence and file counts, no hashing)."""
    problems = []
    for check in checks:
        target = root / check.path
        if check.n_files == 1 and not target.is_file():
            problems.append(f"missing file {check.path}")
        elif check.n_files > 1:
            if not target.is_dir():
                problems.append(f"missing folder {check.path}")
            elif (n := sum(1 for p in target.rglob("*") if p.is_file())) != check.n_files:
                problems.append(f"{check.path} holds {n} files, expected {check.n_files}")
    return problems


def full_problems(root: Path, checks: tuple[Check, ...]) -> list[str]:
    """Every difference between ``root`` and ``checks``, hashing every file."""
    problems = quick_problems(root, checks)
    if problems:
        return problems
    for check in checks:
        digest, _ = measure(root, check.path)
        if digest != check.sha256:
            problems.append(f"{check.path}: sha256 {digest[:16]}…, expected {check.sha256[:16]}…")
    return problems
