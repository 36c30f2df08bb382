"""Check every number of the README's results tables against the rendered reports (``make check-claims``).

A *results table* is a Markdown table whose header has a column named ``ours ...``. In such a
table every number of every cell but the first (the row's label) is a claim, and the cell names
where each of its numbers comes from in an HTML comment, one *key* per number, in order::

    | VGG16-SSD300 mAP@0.5 | 0.84 <!-- 01_detection:summary[metric="VGG16-SSD300 mAP@0.5"].paper --> | 0.897 [0.871, 0.919] <!-- 01_detection:metrics.map[model="VGG16-SSD300"].mAP50 .ci_low .ci_high --> |

Rendered, the comments are invisible. A key is ``<notebook>:<path>``: the path walks the notebook's
``reports/<profile>/<notebook>/metrics.json`` (``summary...`` or ``metrics...``), with ``params...``
the notebook's parameters in ``reports/<profile>/runs.json``, or with ``tables.<name>...`` the rows of the
notebook's ``tables/<name>.csv`` (``tables.counts_by_source[source="PBC", class="RBC"].mape``); a segment is a name, ``name[3]`` (a list
index) or ``name[field="value", ...]`` (the one list item whose fields equal the values); a name with
spaces is quoted (``"train minutes"``). A key starting with
``.`` replaces the last segment of the key before it. A key may end in ``*<number>`` or ``/<number>``
(e.g. ``*100`` for a share shown in percent). Pipes cannot appear in a comment (they split cells).

A claim holds when the number equals the value rounded to the number's decimals (within half a unit
of its last digit). A number without a key, a key without a number, a key that does not resolve and a
number that differs all fail. Numbers glued to letters (``VGG16``, ``table1``) are names, not numbers.
Which profile the numbers come from is read from a ``<!-- claims: profile=<name> -->`` line of the
README (default ``cpu``); ``python -m bloodlib.report.claims [README.md] [--profile P] [--reports DIR]``
prints every claim and exits non-zero when one fails; ``--write`` first rewrites every claimed number
from the reports (same decimals), the way to update the README after a new render.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: A number: not glued to a letter, digit, ``_`` or ``.`` before it, nor to a letter, digit or ``_`` after it.
NUMBER = re.compile(r"(?<![A-Za-z0-9_.])[-−]?(?:\d{1,3}(?:,\d{3})+(?![0-9])|\d+)(?:\.\d+)?(?![A-Za-z0-9_]|\.\d)")
COMMENT = re.compile(r"<!--(.*?)-->", re.S)
PROFILE_MARK = re.compile(r"<!--\s*claims:\s*profile=([A-Za-z0-9_-]+)\s*-->")
_NAME = r'[A-Za-z0-9_@%-]+|"(?:[^"\\]|\\.)*"'
_VALUE = r'"(?:[^"\\]|\\.)*"'
_CONDITION = re.compile(rf"\s*({_NAME})=({_VALUE})\s*")
_SEGMENT = re.compile(rf"({_NAME})(?:\[(-?\d+|(?:\s*(?:{_NAME})={_VALUE}\s*,?)+)\])?")
_SCALE = re.compile(r"([*/])(\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class Claim:
    """One number of a results table and the key it names (None: no key)."""

    line: int
    row: str
    column: str
    text: str
    key: str | None

    @property
    def value(self) -> float:
        return float(self.text.replace(",", "").replace("−", "-"))

    @property
    def decimals(self) -> int:
        return len(self.text.split(".")[1]) if "." in self.text else 0


@dataclass
class Outcome:
    """The check of one claim: ``ok``, the value found (None if not resolved) and why it failed."""

    claim: Claim | None
    ok: bool
    found: float | None = None
    problem: str = ""


@dataclass
class Report:
    """Every outcome of :func:`check_claims`, the profile and the run the reports come from."""

    outcomes: list[Outcome] = field(default_factory=list)
    profile: str = ""
    run: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.outcomes) and all(o.ok for o in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]


def split_row(line: str) -> list[str]:
    """The cells of one Markdown table row (``| a | b |`` -> ``["a", "b"]``); ``\\|`` stays in its cell."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [c.strip() for c in re.split(r"(?<!\\)\|", body)]


def markdown_tables(text: str) -> list[tuple[int, list[str], list[tuple[int, list[str]]]]]:
    """Every Markdown table of ``text``: ``(line of the header, header cells, [(line, cells), ...])``
    (lines counted from 1; a table is a header row, a ``---`` separator row and its body rows; fenced
    code blocks are skipped)."""
    lines = text.splitlines()
    fenced, inside = set(), False
    for k, line in enumerate(lines):
        if line.lstrip().startswith(("```", "~~~")):
            inside = not inside
            fenced.add(k)
        elif inside:
            fenced.add(k)
    lines = ["" if k in fenced else line for k, line in enumerate(lines)]  # code blocks hold no tables
    tables, i = [], 0
    while i < len(lines) - 1:
        if lines[i].lstrip().startswith("|") and re.fullmatch(r"\s*\|?[\s:|-]*-[\s:|-]*\|?\s*", lines[i + 1]):
            header, rows, j = split_row(lines[i]), [], i + 2
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                rows.append((j + 1, split_row(lines[j])))
                j += 1
            tables.append((i + 1, header, rows))
            i = j
        else:
            i += 1
    return tables


def is_results_table(header: list[str]) -> bool:
    """A results table has a header cell starting with ``ours``."""
    return any(cell.strip("`* ").lower().startswith("ours") for cell in header)


def split_keys(comment: str) -> list[str]:
    """The whitespace-separated keys of a comment (whitespace inside quotes or brackets kept)."""
    keys, current, quoted, depth = [], "", False, 0
    for char in comment.strip():
        if char == '"' and not current.endswith("\\"):
            quoted = not quoted
        elif not quoted and char == "[":
            depth += 1
        elif not quoted and char == "]":
            depth -= 1
        if char.isspace() and not quoted and depth == 0:
            if current:
                keys.append(current)
            current = ""
        else:
            current += char
    if current:
        keys.append(current)
    return keys


def _absolute(keys: list[str]) -> list[str]:
    """Keys with the relative ones (``.name``) completed from the key before them."""
    out: list[str] = []
    for key in keys:
        if key.startswith(".") and out:
            base, _ = _split_last(_SCALE.sub("", out[-1]))
            key = base + key
        out.append(key)
    return out


def _split_last(key: str) -> tuple[str, str]:
    """``a.b[x="1.2"].c`` -> (``a.b[x="1.2"]``, ``c``): the last dot outside quotes and brackets."""
    quoted, depth, last = False, 0, -1
    for i, char in enumerate(key):
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "[":
            depth += 1
        elif not quoted and char == "]":
            depth -= 1
        elif char == "." and not quoted and depth == 0:
            last = i
    return (key[:last], key[last + 1 :]) if last >= 0 else (key, "")


def cell_keys(cell: str) -> list[str]:
    """The keys of a cell's comments, relative ones completed."""
    return _absolute([k for comment in COMMENT.findall(cell) for k in split_keys(comment)])


def cell_numbers(cell: str) -> list[re.Match]:
    """The numbers of a cell outside its comments, with their positions in ``cell``."""
    blanked = COMMENT.sub(lambda m: " " * len(m.group(0)), cell)
    return list(NUMBER.finditer(blanked))


def table_claims(text: str) -> list[Claim]:
    """Every number of every results table of ``text`` with its key (None where the cell names too few;
    a key without a number becomes a claim with empty ``text``)."""
    claims = []
    for _, header, rows in markdown_tables(text):
        if not is_results_table(header):
            continue
        for line, cells in rows:
            label = cells[0] if cells else ""
            for column, cell in zip(header[1:], cells[1:]):
                keys = cell_keys(cell)
                numbers = [m.group(0) for m in cell_numbers(cell)]
                for k in range(max(len(keys), len(numbers))):
                    claims.append(
                        Claim(
                            line,
                            label,
                            column,
                            numbers[k] if k < len(numbers) else "",
                            keys[k] if k < len(keys) else None,
                        )
                    )
    return claims


def parse_path(path: str) -> list[tuple[str, int | None, dict[str, str] | None]]:
    """``summary[metric="x"].ours`` -> ``[("summary", None, {"metric": "x"}), ("ours", None, None)]``;
    ``table3[model="arch2", set="TEST"]`` selects by two fields.

    Raises:
        ValueError: a segment that is not ``name``, ``name[i]`` or ``name[field="value", ...]``.
    """
    segments, rest = [], path
    while rest:
        match = _SEGMENT.match(rest)
        if match is None or not match.group(0):
            raise ValueError(f"bad key segment at {rest!r} in {path!r}")
        name, inside = _unquote(match.group(1)), match.group(2)
        index, where = None, None
        if inside is not None and re.fullmatch(r"-?\d+", inside):
            index = int(inside)
        elif inside is not None:
            where = {_unquote(f): _unquote(v) for f, v in _CONDITION.findall(inside)}
        segments.append((name, index, where))
        rest = rest[match.end() :]
        if rest.startswith("."):
            rest = rest[1:]
        elif rest:
            raise ValueError(f"bad key segment at {rest!r} in {path!r}")
    return segments


def _unquote(name: str) -> str:
    return name[1:-1].replace('\\"', '"') if name.startswith('"') else name


class Sources:
    """The rendered reports of one profile: ``<notebook>/metrics.json`` and ``runs.json``, read once."""

    def __init__(self, reports: Path) -> None:
        self.reports = Path(reports)
        self._cache: dict[str, Any] = {}

    def document(self, notebook: str, root: str) -> Any:
        """``{"summary", "metrics", ...}`` of the notebook's ``metrics.json``, ``{"params": ...}`` or
        ``{"tables": {name: [row, ...]}}`` (the notebook's ``tables/<name>.csv``, cells as text)."""
        if root == "params":
            runs = self._load(self.reports / "runs.json")
            return {"params": runs["notebooks"][notebook]["parameters"]}
        if root == "tables":
            folder = self.reports / notebook / "tables"
            if not folder.is_dir():
                raise KeyError(f"no folder {folder}")
            return {"tables": {path.stem: self._load_csv(path) for path in sorted(folder.glob("*.csv"))}}
        return self._load(self.reports / notebook / "metrics.json")

    def _load_csv(self, path: Path) -> list[dict[str, str]]:
        if str(path) not in self._cache:
            with path.open(newline="", encoding="utf-8") as rows:
                self._cache[str(path)] = list(csv.DictReader(rows))
        return self._cache[str(path)]

    def _load(self, path: Path) -> Any:
        if str(path) not in self._cache:
            self._cache[str(path)] = json.loads(path.read_text(encoding="utf-8"))
        return self._cache[str(path)]

    def resolve(self, key: str) -> float:
        """The number ``key`` names (see the module docstring); NaN where the reports hold none (null).

        Raises:
            KeyError: the notebook, file or path does not exist, or the value is not a number.
        """
        scale = _SCALE.search(key)
        bare = key[: scale.start()] if scale else key
        notebook, sep, path = bare.partition(":")
        if not sep or not path:
            raise KeyError(f"{key!r} is not <notebook>:<path>")
        segments = parse_path(path)
        try:
            node = self.document(notebook, segments[0][0])
        except (OSError, KeyError) as err:
            raise KeyError(f"no reports for {notebook!r} in {self.reports}: {err}") from err
        for name, index, where in segments:
            if not isinstance(node, dict) or name not in node:
                raise KeyError(f"{key}: no {name!r}")
            node = node[name]
            if index is not None:
                if not isinstance(node, list) or not -len(node) <= index < len(node):
                    raise KeyError(f"{key}: no item {index} in {name!r}")
                node = node[index]
            if where is not None:
                found = [
                    item
                    for item in (node if isinstance(node, list) else [])
                    if isinstance(item, dict) and all(str(item.get(f)) == v for f, v in where.items())
                ]
                if len(found) != 1:
                    raise KeyError(f"{key}: {len(found)} items of {name!r} have {where}")
                node = found[0]
        if node is None or node == "":  # metrics.json writes NaN as null, a CSV as an empty cell
            return math.nan
        if isinstance(node, str) and segments[0][0] == "tables":
            try:
                node = float(node)
            except ValueError:
                raise KeyError(f"{key}: {node!r} is not a number") from None
        if isinstance(node, bool) or not isinstance(node, (int, float)):
            raise KeyError(f"{key}: {node!r} is not a number")
        value = float(node)
        if scale:
            factor = float(scale.group(2))
            value = value * factor if scale.group(1) == "*" else value / factor
        return value


def matches(claim: Claim, value: float) -> bool:
    """Whether ``claim`` shows ``value`` rounded to its decimals."""
    if math.isnan(value):
        return False
    tolerance = 0.5 * 10 ** (-claim.decimals) + 1e-9 * max(1.0, abs(value))
    return abs(claim.value - value) <= tolerance


def readme_profile(text: str, default: str = "cpu") -> str:
    """The profile a README's ``<!-- claims: profile=... -->`` line names (``default`` without one)."""
    found = PROFILE_MARK.search(text)
    return found.group(1) if found else default


def check_claims(text: str, reports: Path, *, structure_only: bool = False) -> Report:
    """Check every claim of ``text`` (a README) against the reports folder ``reports``
    (``reports/<profile>``). ``structure_only``: every number has a key and every key resolves, the
    values are not compared (for reports of another profile)."""
    sources = Sources(reports)
    report = Report(profile=Path(reports).name)
    runs = Path(reports) / "runs.json"
    if runs.is_file():
        prov = json.loads(runs.read_text(encoding="utf-8")).get("provenance", {})
        report.run = f"git commit {prov.get('git_commit', 'unknown')}, profile {prov.get('profile', '?')}"
    claims = table_claims(text)
    if not claims:
        report.outcomes.append(Outcome(None, False, problem="no numbers in results tables (a header 'ours ...')"))
    for claim in claims:
        if claim.key is None:
            report.outcomes.append(Outcome(claim, False, problem="no key names where this number comes from"))
            continue
        if not claim.text:
            report.outcomes.append(Outcome(claim, False, problem="a key without a number in its cell"))
            continue
        try:
            value = sources.resolve(claim.key)
        except (KeyError, ValueError) as err:
            why = err.args[0] if err.args else err
            report.outcomes.append(Outcome(claim, False, problem=f"key does not resolve: {why}"))
            continue
        ok = structure_only or matches(claim, value)
        problem = (
            "" if ok else ("the reports hold no value (NaN)" if math.isnan(value) else f"the reports say {value:.6g}")
        )
        report.outcomes.append(Outcome(claim, ok, value, problem))
    return report


def format_report(report: Report, *, verbose: bool = False) -> str:
    """Lines for the terminal: the failures (every claim with ``verbose``) and a last summary line."""
    lines = []
    for o in report.outcomes:
        if o.ok and not verbose:
            continue
        where = (
            f"README:{o.claim.line} [{o.claim.row[:40]} | {o.claim.column[:20]}] {o.claim.text or '-'}"
            if o.claim
            else "README"
        )
        lines.append(
            f"{'ok  ' if o.ok else 'FAIL'} {where} <- {o.claim.key if o.claim else ''}"
            + (f": {o.problem}" if o.problem else "")
        )
    good = sum(o.ok for o in report.outcomes)
    lines.append(
        f"{good} of {len(report.outcomes)} README claims match the reports in {report.profile or '?'}"
        + (f" ({report.run})" if report.run else "")
    )
    return "\n".join(lines)


def _formatted(value: float, like: str) -> str:
    decimals = len(like.split(".")[1]) if "." in like else 0
    text = f"{value:,.{decimals}f}" if "," in like else f"{value:.{decimals}f}"
    return text.replace("-", "−") if like.startswith("−") else text


def fill_claims(text: str, reports: Path) -> str:
    """``text`` with every claimed number whose key resolves rewritten from the reports, at the number's
    decimals (and thousands separators): what a README's results tables say after a new render.
    Numbers without a key, whose key does not resolve or whose value is NaN are left as they are."""
    sources = Sources(reports)
    lines = text.splitlines(keepends=True)
    for _, header, rows in markdown_tables(text):
        if not is_results_table(header):
            continue
        for line, _ in rows:
            raw = lines[line - 1]
            parts = re.split(r"(?<!\\)(\|)", raw)  # cells and the pipes between them
            cells = [i for i in range(len(parts)) if parts[i] != "|"]
            for i in cells[2:-1]:  # value cells: after the leading fragment and the label, before the tail
                cell = parts[i]
                keys, numbers = cell_keys(cell), cell_numbers(cell)
                for key, match in reversed(list(zip(keys, numbers))):
                    try:
                        value = sources.resolve(key)
                    except (KeyError, ValueError):
                        continue
                    if math.isnan(value):
                        continue
                    cell = cell[: match.start()] + _formatted(value, match.group(0)) + cell[match.end() :]
                parts[i] = cell
            lines[line - 1] = "".join(parts)
    return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m bloodlib.report.claims [README] [--profile P] [--reports DIR] [--structure-only] [--write] [-v]``."""
    from bloodlib.paths import project_root, reports_dir

    parser = argparse.ArgumentParser(prog="python -m bloodlib.report.claims", description=__doc__.splitlines()[0])
    parser.add_argument("readme", nargs="?", type=Path, default=None, help="default: the project's README.md")
    parser.add_argument("--profile", default=None, help="default: the README's <!-- claims: profile=... --> line")
    parser.add_argument("--reports", type=Path, default=None, help="default: reports/<profile>")
    parser.add_argument("--structure-only", action="store_true", help="check keys, not values")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every claim, not only failures")
    parser.add_argument(
        "--write", action="store_true", help="first rewrite the README's claimed numbers from the reports"
    )
    args = parser.parse_args(argv)
    readme = args.readme or project_root() / "README.md"
    text = readme.read_text(encoding="utf-8")
    reports = args.reports or reports_dir(args.profile or readme_profile(text))
    if args.write:
        text = fill_claims(text, reports)
        readme.write_text(text, encoding="utf-8")
    report = check_claims(text, reports, structure_only=args.structure_only)
    print(format_report(report, verbose=args.verbose))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
