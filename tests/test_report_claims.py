"""``make check-claims``: every number of the README's results tables against the rendered metrics.json files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bloodlib.report import claims
from tests.paths import ROOT

README_PATH = ROOT / "README.md"

README = """# demo

<!-- claims: profile=quick -->

| path | what |
|---|---|
| `a/` | 3 things, 0.5 of them |

| Task 1 (72 images, SSD300) | paper | ours (`quick`) |
|---|---|---|
| mAP@0.5, VGG16 | 0.84 <!-- 01_x:summary[metric="VGG16 mAP@0.5"].paper --> | 0.897 [0.871, 0.919] <!-- 01_x:metrics.map[model="VGG16"].mAP50 .ci_low .ci_high --> |
| exact counts / MAPE | – | 94.4% / 26.9% of 2,487 <!-- 01_x:metrics.headline.exact*100 01_x:metrics.headline.mape 01_x:metrics.sets[set="TEST", kind="all"]."image count" --> |
| width | – | 0.25 <!-- 01_x:params.width --> |

```markdown
| x | ours |
|---|---|
| a | 1.5 |
```
"""


def write_reports(folder: Path, **changes) -> Path:
    metrics = {
        "notebook": "01_x",
        "summary": [{"metric": "VGG16 mAP@0.5", "paper": 0.84, "ours": 0.8971}],
        "metrics": {
            "map": [{"model": "VGG16", "mAP50": 0.8971, "ci_low": 0.87149, "ci_high": 0.9186}],
            "headline": {"exact": 0.9444, "mape": 26.93},
            "sets": [
                {"set": "TEST", "kind": "all", "image count": 2487},
                {"set": "TEST", "kind": "one", "image count": 71},
            ],
        },
    }
    metrics["metrics"]["headline"].update(changes)
    (folder / "01_x").mkdir(parents=True, exist_ok=True)
    (folder / "01_x" / "metrics.json").write_text(json.dumps(metrics))
    runs = {
        "provenance": {"git_commit": "abc", "profile": "quick"},
        "notebooks": {"01_x": {"parameters": {"width": 0.25}}},
    }
    (folder / "runs.json").write_text(json.dumps(runs))
    return folder


def test_numbers_keys_and_paths_parse():
    found = [m.group(0) for m in claims.NUMBER.finditer("0.9 [0.8, 1.0] VGG16 table1 2,487 71/71 15.5× −0.5 mAP@0.5")]
    assert found == ["0.9", "0.8", "1.0", "2,487", "71", "71", "15.5", "−0.5", "0.5"]
    assert claims.split_keys(' a:b[x="p q"].c  .d\n e:f*100 ') == ['a:b[x="p q"].c', ".d", "e:f*100"]
    assert claims.parse_path('m.t[model="a", set="B C"]."train minutes"') == [
        ("m", None, None),
        ("t", None, {"model": "a", "set": "B C"}),
        ("train minutes", None, None),
    ]
    assert claims.parse_path("m.x[2]") == [("m", None, None), ("x", 2, None)]
    with pytest.raises(ValueError, match="bad key segment"):
        claims.parse_path("m.x[")
    assert claims.readme_profile(README) == "quick" and claims.readme_profile("no mark") == "cpu"


def test_only_value_cells_of_results_tables_are_claims():
    found = claims.table_claims(README)
    assert [c.text for c in found] == ["0.84", "0.897", "0.871", "0.919", "94.4", "26.9", "2,487", "0.25"]
    assert found[1].key == '01_x:metrics.map[model="VGG16"].mAP50'
    assert found[2].key == '01_x:metrics.map[model="VGG16"].ci_low'  # relative to the key before
    assert found[4].value == 94.4 and found[4].decimals == 1 and found[6].value == 2487.0
    assert {c.row for c in found} == {"mAP@0.5, VGG16", "exact counts / MAPE", "width"}


def test_matching_reports_pass_and_every_kind_of_drift_fails(tmp_path):
    reports = write_reports(tmp_path / "quick")
    report = claims.check_claims(README, reports)
    assert report.ok, claims.format_report(report)
    assert report.run == "git commit abc, profile quick" and len(report.outcomes) == 8
    moved = claims.check_claims(README, write_reports(tmp_path / "moved", mape=27.0))
    assert [o.claim.text for o in moved.failures] == ["26.9"] and "27" in moved.failures[0].problem
    gone = claims.check_claims(README.replace(" .ci_high", ""), reports)
    assert [(o.claim.text, o.problem) for o in gone.failures] == [
        ("0.919", "no key names where this number comes from")
    ]
    extra = claims.check_claims(README.replace("0.25 <!--", "<!--"), reports)
    assert extra.failures[0].problem == "a key without a number in its cell"
    wrong = claims.check_claims(README.replace('kind="all"', 'kind="none"'), reports)
    assert "0 items of 'sets'" in wrong.failures[0].problem
    nan = claims.check_claims(README, write_reports(tmp_path / "nan", mape=None))
    assert nan.failures[0].problem == "the reports hold no value (NaN)"
    assert claims.check_claims(README, tmp_path / "nan", structure_only=True).ok
    assert not claims.check_claims("| a | b |\n|---|---|\n| 1 | 2 |\n", reports).ok  # no results table at all
    assert "8 of 8 README claims match" in claims.format_report(report)


def test_fill_rewrites_claimed_numbers_at_their_decimals(tmp_path):
    reports = write_reports(tmp_path / "quick", exact=0.9, mape=3.14159)
    stale = README.replace("2,487", "1,000")
    filled = claims.fill_claims(stale, reports)
    assert "90.0% / 3.1% of 2,487" in filled and "0.897 [0.871, 0.919]" in filled
    assert filled.count("3 things, 0.5 of them") == 1  # not a results table: untouched
    assert claims.check_claims(filled, reports).ok


def test_cli_exit_status(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    reports = write_reports(tmp_path / "quick")
    assert claims.main([str(readme), "--reports", str(reports)]) == 0
    readme.write_text(README.replace("0.897", "0.898"))
    assert claims.main([str(readme), "--reports", str(reports)]) == 1
    assert "FAIL README:11" in capsys.readouterr().out
    assert claims.main([str(readme), "--reports", str(reports), "--write"]) == 0
    assert "0.897 [0.871" in readme.read_text()


def test_the_real_readme_results_tables_are_read_and_unsourced_numbers_fail(tmp_path):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    tables = [t for t in claims.markdown_tables(text) if claims.is_results_table(t[1])]
    assert len(tables) >= 4  # Task 3, Task 1, Task 2, pipeline
    found = claims.table_claims(text)
    assert {c.line for c in found} >= {rows[0][0] for _, _, rows in tables}  # every table's first row has numbers
    report = claims.check_claims(text, tmp_path / "none")
    assert not report.ok and all(not o.ok for o in report.outcomes)  # nothing is sourced by reports that do not exist
    assert "## Checking the README against the reports" in text


def test_every_number_of_the_readmes_results_tables_names_its_source():
    found = claims.table_claims(README_PATH.read_text(encoding="utf-8"))
    assert len(found) > 100 and all(c.key and c.text for c in found)
    notebooks = {path.stem for path in (ROOT / "notebooks").glob("*.ipynb")}
    for claim in found:
        notebook, _, path = claim.key.partition(":")
        assert notebook in notebooks
        claims.parse_path(claims._SCALE.sub("", path))


@pytest.mark.slow
@pytest.mark.timeout(2400)  # renders every notebook with the quick profile (trains eight CNNs and three SSDs)
def test_claims_against_the_quick_profiles_outputs(tmp_path, monkeypatch):
    from bloodlib.report.runner import run_reports
    from tests.paths import require_data

    require_data()
    monkeypatch.setenv("BLOODLIB_MODELS", str(tmp_path / "models"))
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    names = sorted(path.stem for path in (ROOT / "notebooks").glob("*.ipynb"))
    for name in names:
        shutil.copy(ROOT / "notebooks" / f"{name}.ipynb", root / "notebooks")
    shutil.copytree(ROOT / "params", root / "params")
    runs = run_reports("quick", only=names, root=root)
    assert all(run.status == "ok" for run in runs), [(r.name, r.error) for r in runs]
    reports = root / "reports" / "quick"
    readme = README_PATH.read_text(encoding="utf-8")
    structure = claims.check_claims(readme, reports, structure_only=True)
    assert structure.ok, claims.format_report(structure)  # every key of the README's tables exists
    filled = claims.fill_claims(readme, reports)
    checked = claims.check_claims(filled, reports)
    assert all("no value (NaN)" in o.problem for o in checked.failures), claims.format_report(checked)
    assert len(checked.failures) < len(checked.outcomes) / 4  # quick's tiny models leave few NaNs
    good = next(o.claim for o in checked.outcomes if o.ok and o.claim.decimals == 3)
    bad_line = filled.splitlines()[good.line - 1].replace(good.text, f"{good.value + 0.002:.3f}", 1)
    lines = filled.splitlines()
    lines[good.line - 1] = bad_line
    assert not claims.check_claims("\n".join(lines), reports).ok


def test_a_key_can_name_a_cell_of_a_reports_csv_table(tmp_path):
    reports = write_reports(tmp_path / "quick")
    (reports / "01_x" / "tables").mkdir()
    (reports / "01_x" / "tables" / "counts_by_source.csv").write_text(
        "source,class,mape,exact\nPBC,RBC,9.41,\nPBC,WBC,,0.988\nBCCD,RBC,15.2,\n"
    )
    sources = claims.Sources(reports)
    assert sources.resolve('01_x:tables.counts_by_source[source="PBC", class="RBC"].mape') == 9.41
    assert sources.resolve('01_x:tables.counts_by_source[source="PBC", class="WBC"].exact*100') == 98.8
    assert sources.resolve('01_x:tables.counts_by_source[source="PBC", class="WBC"].mape') != 0  # NaN
    with pytest.raises(KeyError, match="0 items"):
        sources.resolve('01_x:tables.counts_by_source[source="Raabin", class="RBC"].mape')
    with pytest.raises(KeyError, match="'nowhere'"):
        sources.resolve("01_x:tables.nowhere[0].mape")
    with pytest.raises(KeyError, match="is not a number"):
        sources.resolve("01_x:tables.counts_by_source[0].source")
    text = '| x | ours |\n|---|---|\n| RBC MAPE, PBC | 9.4% <!-- 01_x:tables.counts_by_source[source="PBC", class="RBC"].mape --> |\n'
    assert claims.check_claims(text, reports).ok
