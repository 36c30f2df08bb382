"""Parameter schemas and profiles: errors name the file and the key; notebooks agree with params/cpu."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import nbformat
import pytest

from bloodlib import params as params_mod
from tests.paths import ROOT


@dataclasses.dataclass(frozen=True)
class Demo:
    seed: int
    rate: float
    name: str
    flags: list[str]
    enabled: bool


GOOD = "seed: 3\nrate: 1\nname: x\nflags: [a, b]\nenabled: true\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "demo.yaml"
    path.write_text(text)
    return path


def load(path: Path) -> Demo:
    return params_mod.build(Demo, params_mod.read_yaml_mapping(path), str(path))


def test_good_file_loads_with_int_as_float(tmp_path):
    params = load(write(tmp_path, GOOD))
    assert params == Demo(seed=3, rate=1, name="x", flags=["a", "b"], enabled=True)


@pytest.mark.parametrize(
    "text,key,words",
    [
        (GOOD + "extra: 1\n", "extra", "unknown key"),
        (GOOD.replace("seed: 3\n", ""), "seed", "missing key"),
        (GOOD.replace("seed: 3", "seed: three"), "seed", "should be int"),
        (GOOD.replace("seed: 3", "seed: true"), "seed", "should be int"),
        (GOOD.replace("rate: 1", "rate: fast"), "rate", "should be float"),
        (GOOD.replace("flags: [a, b]", "flags: [a, 2]"), "flags", "should be list"),
        (GOOD.replace("enabled: true", "enabled: 1"), "enabled", "should be bool"),
    ],
)
def test_errors_name_file_and_key(tmp_path, text, key, words):
    path = write(tmp_path, text)
    with pytest.raises(params_mod.ParamsError) as err:
        load(path)
    assert str(path) in str(err.value) and key in str(err.value) and words in str(err.value)


def test_missing_file_and_bad_yaml_are_errors(tmp_path):
    with pytest.raises(params_mod.ParamsError, match="not found: .*nope.yaml"):
        params_mod.read_yaml_mapping(tmp_path / "nope.yaml")
    with pytest.raises(params_mod.ParamsError, match="not valid YAML"):
        params_mod.read_yaml_mapping(write(tmp_path, "a: [1, 2\n"))
    with pytest.raises(params_mod.ParamsError, match="expected a mapping"):
        params_mod.read_yaml_mapping(write(tmp_path, "- 1\n- 2\n"))


def test_unknown_profile_and_notebook():
    with pytest.raises(params_mod.ParamsError, match="unknown profile 'gpu'"):
        params_mod.load_params("03_covid_diagnosis", "gpu", ROOT)
    with pytest.raises(params_mod.ParamsError, match="no parameter schema for notebook '99_x'"):
        params_mod.load_params("99_x", "cpu", ROOT)


def notebook_names() -> list[str]:
    return sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))


def parameters_cell_values(path: Path) -> dict:
    notebook = nbformat.read(path, as_version=4)
    cells = [c for c in notebook.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{path.name}: expected exactly one cell tagged 'parameters'"
    values = {}
    for node in ast.parse(cells[0].source).body:
        assert isinstance(node, ast.Assign), f"{path.name}: parameters cell holds only NAME = literal lines"
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def test_every_notebook_has_a_schema_and_three_valid_profiles():
    assert notebook_names(), "no notebooks found"
    for name in notebook_names():
        for profile in params_mod.PROFILES:
            params_mod.load_params(name, profile, ROOT)
        for profile in params_mod.PROFILES:
            params_mod.load_profile_settings(profile, ROOT)


@pytest.mark.parametrize("name", notebook_names())
def test_notebook_defaults_equal_cpu_profile(name):
    cell = parameters_cell_values(ROOT / "notebooks" / f"{name}.ipynb")
    cpu = params_mod.as_dict(params_mod.load_params(name, "cpu", ROOT))
    runner = {key: cell.pop(key) for key in params_mod.RUNNER_PARAMETERS if key in cell}
    assert runner == {"profile": "cpu", "report_dir": ""}
    assert cell == cpu


@pytest.mark.parametrize("name", notebook_names())
def test_notebooks_are_committed_without_outputs(name):
    notebook = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None


#: What a notebook's code cells may not hold: they call into bloodlib and show what it returns.
LOGIC = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.For, ast.While, ast.If, ast.IfExp)
LOGIC += (ast.Try, ast.With, ast.ListComp, ast.DictComp, ast.SetComp, ast.GeneratorExp)


def logic_in(source: str) -> list[str]:
    """The definitions, loops, conditions and comprehensions in ``source``, one line each."""
    return [f"{type(n).__name__}: {ast.unparse(n)[:60]}" for n in ast.walk(ast.parse(source)) if isinstance(n, LOGIC)]


def test_logic_in_finds_loops_conditions_and_definitions():
    assert logic_in("x = f(a)\nreport.tables(t, prefix='p')") == []
    found = logic_in("for a in b:\n    show(a)\ny = [a for a in b] if c else None\ndef g():\n    pass")
    assert [line.split(":")[0] for line in found] == ["For", "FunctionDef", "IfExp", "ListComp"]


@pytest.mark.parametrize("name", notebook_names())
def test_notebooks_hold_no_logic(name):
    notebook = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    found = [line for cell in notebook.cells if cell.cell_type == "code" for line in logic_in(cell.source)]
    assert not found, f"{name}: notebooks are thin, this belongs in bloodlib: {found}"


def test_params_from_namespace_takes_schema_fields_only(monkeypatch):
    monkeypatch.setitem(params_mod.SCHEMAS, "90_demo", f"{__name__}:Demo")
    namespace = {"seed": 1, "rate": 0.5, "name": "n", "flags": [], "enabled": False, "profile": "cpu", "x": 1}
    assert params_mod.params_from_namespace("90_demo", namespace) == Demo(1, 0.5, "n", [], False)
    del namespace["seed"]
    with pytest.raises(params_mod.ParamsError, match="notebook 90_demo: missing key.* seed"):
        params_mod.params_from_namespace("90_demo", namespace)


@pytest.mark.parametrize("name", ["01_detection", "02_wbc_subtypes", "04_pipeline", "05_generalisation"])
def test_precision_is_checked_where_the_parameters_are_read(name):
    good = params_mod.load_params(name, "cpu", ROOT)
    assert good.precision in params_mod.PRECISIONS
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16, got 'bf16'"):
        dataclasses.replace(good, precision="bf16")
