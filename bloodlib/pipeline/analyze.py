"""``bloodlib analyze PATH... [--out DIR] [--models DIR] [--age N --sex M|F]``: the pipeline end to end.

Every PATH is a sample (a folder of fields, or one image, see :mod:`bloodlib.pipeline.io`). The
images of all samples go through one batched inference pass (:func:`~bloodlib.pipeline.infer.run_fields`,
with a progress bar); each image's outputs are written as soon as it is done, each sample's once
all its images are, then ``summary.csv`` and ``messages.csv`` (:mod:`bloodlib.pipeline.outputs`).
A file that cannot be analysed is reported and skipped; the exit code is 1 if any input failed.

The run owns its output folder: everything is written into a staging folder beside it
(``.<out>.staging-<pid>-*``), ``run.json`` (``"status": "complete"``) last, and only then swapped in
place of ``--out`` (:func:`bloodlib.fsutil.replace_dir`). Ctrl-C, SIGTERM, a full disk or a failed
write remove the staging folder and leave the previous complete result as it was; a later run also
removes the staging folders of runs that were killed. ``--out`` is refused where the swap could
lose something: inside an input folder, holding an input, above the current folder, or an existing
folder that is not an earlier output of ``bloodlib analyze``.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bloodlib.fsutil import atomic_write_text, replace_dir, staging_dir
from bloodlib.pipeline import NOTICE
from bloodlib.pipeline.aggregate import SampleAggregate, aggregate, covid_flags
from bloodlib.pipeline.infer import FieldResult
from bloodlib.pipeline.io import ERROR, MAX_FILE_BYTES, WARNING, Field, Problem, plan_inputs
from bloodlib.pipeline.params import PipelineParams

#: ``run.json``'s ``tool`` entry: marks a folder as an output of ``bloodlib analyze`` (which a run may replace).
TOOL = "bloodlib analyze"


class OutputFolderError(ValueError):
    """``--out`` cannot be used: replacing it could lose something (the message says what)."""


@dataclass
class AnalyzeResult:
    """What a run produced: per-sample aggregates and COVID-19 outputs, every problem, timing."""

    out: Path
    samples: list[tuple[SampleAggregate, dict[str, Any]]]
    problems: list[Problem]
    images: int
    images_ok: int
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """Whether any input (file, folder or path) failed."""
        return any(p.level == ERROR for p in self.problems)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def check_demographics(age: float | None, sex: str | None) -> tuple[float | None, int | None]:
    """``(age, sex as OSR codes it: 1 = male, 0 = female)``, both None if not given.

    Raises:
        ValueError: only one of the two given, age outside 0-120, or sex not M/F.
    """
    if (age is None) != (sex is None):
        raise ValueError("give both --age and --sex, or neither (the model with age and sex needs both)")
    if age is None:
        return None, None
    if not 0 <= float(age) <= 120:
        raise ValueError(f"--age must be between 0 and 120 years, got {age}")
    code = str(sex).strip().upper()
    if code not in ("M", "F"):
        raise ValueError(f"--sex must be M or F, got {sex!r}")
    return float(age), int(code == "M")


def _covid_model(p: PipelineParams, root: Path) -> tuple[Any, dict[str, Any]]:
    """The scale-free COVID-19 model (cached, or fitted on OSR) and a description; ``(None, {"unavailable":
    reason})`` when OSR is missing (counts still come out, probabilities do not).

    Raises:
        CorruptModelError: the cached model is damaged (the message names it and the command that rebuilds it).
    """
    from bloodlib.modelcache import CorruptModelError
    from bloodlib.pipeline.covid import load_or_fit

    try:
        model = load_or_fit(p, root)
    except CorruptModelError:
        raise
    except (OSError, RuntimeError, ValueError) as err:
        return None, {"unavailable": f"{type(err).__name__}: {err}"}
    return model, model.describe()


def _is_analysis_folder(folder: Path) -> bool:
    """Whether ``folder`` is empty or an earlier output of ``bloodlib analyze`` (safe to replace)."""
    import json

    try:
        entries = list(folder.iterdir())
    except OSError:
        return False
    if not entries:
        return True
    try:
        info = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and (info.get("tool") == TOOL or info.get("notice") == NOTICE)


def check_output_folder(out: Path, inputs: list[str | Path]) -> Path:
    """``out`` made absolute, once it is safe for a run to replace it.

    Raises:
        OutputFolderError: ``out`` is inside an input folder, holds an input, is the current folder (or
            above it), is not a folder, or is an existing folder that is not an earlier output of
            ``bloodlib analyze``.
    """
    target = Path(os.path.abspath(out))
    resolved = target.resolve()
    if Path.cwd().resolve().is_relative_to(resolved):
        raise OutputFolderError(f"--out {out} is the current folder or above it; name a new folder for the outputs")
    for given in inputs:
        source = Path(given).resolve()
        if source.is_dir() and resolved.is_relative_to(source):
            raise OutputFolderError(
                f"--out {out} is inside the input folder {given}: its outputs would be read as images; "
                "name a folder outside it"
            )
        if source.is_relative_to(resolved):
            raise OutputFolderError(f"--out {out} holds the input {given}, and a run replaces that folder")
    if target.exists() or target.is_symlink():
        if not target.is_dir() or target.is_symlink():
            raise OutputFolderError(f"--out {out} exists and is not a folder")
        if not _is_analysis_folder(target):
            raise OutputFolderError(
                f"--out {out} is a folder with other files in it (not an earlier output of bloodlib analyze), "
                "which a run would replace; name a new or empty folder"
            )
    return target


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(out: Path) -> list[Path]:
    """Remove the staging folders of runs into ``out`` that were killed (their process is gone); returns them."""
    removed = []
    for folder in out.parent.glob(f".{out.name}.staging-*"):
        pid = folder.name[len(f".{out.name}.staging-") :].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _covid_unavailable(reason: str) -> dict[str, Any]:
    return {"probability": math.nan, "model": "", "out_of_range": [], "imputed": [], "unavailable": reason}


def analyze(
    paths: list[str | Path],
    out: str | Path,
    p: PipelineParams,
    *,
    models_root: Path | None = None,
    age: float | None = None,
    sex: str | None = None,
    annotate_images: bool = True,
    progress: bool = True,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> AnalyzeResult:
    """Analyse ``paths`` into the folder ``out`` (replaced as a whole once complete); see the module docstring.

    Args:
        max_file_bytes: input files larger than this are refused before they are read.

    Raises:
        ModelsNotFoundError: the detector or the classifier is not in the model cache.
        CorruptModelError: a cached model is damaged (the message names the file).
        OutputFolderError: ``out`` cannot be replaced safely.
        ValueError: bad ``age``/``sex``.
        OSError: the outputs cannot be written (``out`` is then left as it was).
    """
    from bloodlib import runtime
    from bloodlib.modelcache import models_root as default_root
    from bloodlib.pipeline.models import load_models

    started = time.perf_counter()
    demographics = check_demographics(age, sex)
    target = check_output_folder(Path(out), paths)
    runtime.configure(threads=p.num_threads)
    root = Path(models_root) if models_root is not None else default_root()
    plan = plan_inputs(paths, max_bytes=max_file_bytes)
    models = load_models(p, root=root, train_missing=False)
    covid = _covid_model(p, root)
    remove_stale_staging(target)
    staging = staging_dir(target.parent, f".{target.name}.staging-{os.getpid()}-")
    try:
        result = _write_outputs(
            staging, paths, plan, p, models, covid, demographics, annotate_images, progress, started
        )
        replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result.out = target
    return result


def _write_outputs(
    out: Path,
    paths: list[str | Path],
    plan: Any,
    p: PipelineParams,
    models: Any,
    covid_model_info: tuple[Any, dict[str, Any]],
    demographics: tuple[float | None, int | None],
    annotate_images: bool,
    progress: bool,
    started: float,
) -> AnalyzeResult:
    """Analyse the inputs of ``plan`` and write every output into the (staging) folder ``out``, ``run.json`` last."""
    from bloodlib.pipeline import outputs
    from bloodlib.pipeline.infer import Classifier

    covid_model, covid_info = covid_model_info
    problems = list(plan.problems)
    if covid_model is None:
        reason = covid_info["unavailable"]
        problems.append(Problem(WARNING, "", "", f"no COVID-19 model, probabilities left empty: {reason}"))
    detector = models.fast_detector(p.precision, um_per_pixel=p.um_per_pixel)
    classifier = Classifier(models.classifier, models.policy)
    inference_started = time.perf_counter()
    results = _analyse_fields(out, plan, p, models, detector, classifier, problems, annotate_images, progress)
    inference_s = time.perf_counter() - inference_started
    samples = _write_samples(out, plan, results, p, covid_model_info, demographics, problems)

    atomic_write_text(out / "summary.csv", outputs.summary_csv(samples))
    atomic_write_text(out / "messages.csv", outputs.messages_csv(problems))
    atomic_write_text(out / "NOTICE.txt", outputs.NOTICE_TEXT)
    images = len(plan.fields)
    images_ok = sum(r.ok for rs in results.values() for r in rs)
    seconds = time.perf_counter() - started
    info = _run_info(paths, p, models, detector.precision, covid_info, images, images_ok)
    info["seconds_total"] = seconds
    info["seconds_inference_and_writing"] = inference_s
    info["images_per_second"] = images / inference_s if inference_s > 0 else None
    info |= {"errors": sum(x.level == ERROR for x in problems), "warnings": sum(x.level == WARNING for x in problems)}
    atomic_write_text(out / "run.json", outputs.json_text(info))
    return AnalyzeResult(out, samples, problems, images, images_ok, seconds, info)


def _analyse_fields(
    out: Path,
    plan: Any,
    p: PipelineParams,
    models: Any,
    detector: Any,
    classifier: Any,
    problems: list[Problem],
    annotate_images: bool,
    progress: bool,
) -> dict[str, list[FieldResult]]:
    """Sample -> the result of each of its fields, in order; each field's files are written as soon as it is
    done (by one writer thread, so PNG encoding and writing overlap with inference) and its problems appended
    to ``problems``."""
    from bloodlib.pipeline import outputs
    from bloodlib.pipeline.annotate import annotate, png_bytes
    from bloodlib.pipeline.infer import run_fields_of
    from bloodlib.pipeline.ood import flag_field

    readable = [f for f in plan.fields if f.error is None]
    results: dict[str, list] = {s: [] for s in plan.samples}
    stream = iter(
        run_fields_of(p, [f.path for f in readable], detector, classifier, models.thresholds, progress=progress)
    )

    def write(f: Field, r: FieldResult) -> None:
        png = png_bytes(annotate(r, title=f"{f.sample}/{f.name}")) if annotate_images else None
        outputs.write_field(out / "samples" / f.sample, f, r, models.thresholds, png)
        r.rgb = None  # the image is no longer needed

    # zlib and OpenCV release the GIL
    with ThreadPoolExecutor(max_workers=1) as writer:
        pending: deque[Future] = deque()
        for index, f in enumerate(plan.fields):
            r = FieldResult(index, error=f.error) if f.error is not None else next(stream)
            if r.ok:
                flag_field(r, models.ood)
                pending.append(writer.submit(write, f, r))
                problems += [Problem(WARNING, f.sample, f.display, w) for w in r.warnings]
                if r.flags and r.flags["ood"]:
                    problems.append(
                        Problem(WARNING, f.sample, f.display, "unlike the training data: " + r.flags["ood_reasons"])
                    )
            else:
                problems.append(Problem(ERROR, f.sample, f.display, r.error or "failed"))
            results[f.sample].append(r)
            while len(pending) > 2 * p.batch_size or (pending and pending[0].done()):
                pending.popleft().result()  # bounded memory; a failed write raises here
        for future in pending:
            future.result()
    return results


def _write_samples(
    out: Path,
    plan: Any,
    results: dict[str, list[FieldResult]],
    p: PipelineParams,
    covid_model_info: tuple[Any, dict[str, Any]],
    demographics: tuple[float | None, int | None],
    problems: list[Problem],
) -> list[tuple[SampleAggregate, dict[str, Any]]]:
    """Aggregate each sample's fields, predict its COVID-19 probability and write its ``fields.csv`` and
    ``sample.json``; a sample none of whose images could be analysed is appended to ``problems``."""
    from bloodlib.pipeline import covid, outputs

    age_value, sex_code = demographics
    covid_model, covid_info = covid_model_info
    demographics_out = {"age": age_value, "sex": {1: "M", 0: "F"}.get(sex_code)} if age_value is not None else {}
    samples = []
    for name, sample_fields in plan.samples.items():
        agg = aggregate(name, plan.sources[name], sample_fields, results[name], covid.COUNT_PSEUDO)
        if not agg.ok:
            prediction = _covid_unavailable("no image of this sample was analysed")
            if sample_fields:
                problems.append(Problem(ERROR, name, plan.sources[name], "no image of this sample could be analysed"))
        elif covid_model is None:
            prediction = _covid_unavailable(covid_info["unavailable"])
        else:
            prediction = covid_model.predict(agg.features, age=age_value, sex=sex_code)
        flags = covid_flags(agg, prediction, p.min_wbc_confident)
        samples.append((agg, flags))
        folder = out / "samples" / name
        atomic_write_text(folder / "fields.csv", outputs.fields_csv(sample_fields, results[name]))
        atomic_write_text(
            folder / "sample.json",
            outputs.json_text(outputs.sample_payload(agg, flags, sample_fields, results[name], demographics_out)),
        )
    return samples


def _run_info(
    paths: list[str | Path],
    p: PipelineParams,
    models: Any,
    detector_precision: str,
    covid_info: dict[str, Any],
    images: int,
    images_ok: int,
) -> dict[str, Any]:
    """``run.json`` up to its timing and problem counts: what ran, on what, with which models and parameters."""
    from bloodlib.params import as_dict
    from bloodlib.pipeline.io import printable

    return {
        "tool": TOOL,
        "status": "complete",
        "inputs": [printable(str(x)) for x in paths],
        "models": models.info,
        "detector_precision": detector_precision,
        "score_thresholds": models.thresholds,
        "score_threshold_source": models.threshold_source,
        "covid19_model": covid_info,
        "params": as_dict(p),
        "images": images,
        "images_analysed": images_ok,
    }


def print_report(result: AnalyzeResult, write: Any = print) -> None:
    """A short human-readable account of a run (one line per sample, the problems, the notice)."""
    for agg, covid in sorted(result.samples, key=lambda s: s[0].sample):
        if not agg.ok:
            write(f"{agg.sample}: FAILED ({agg.fields} file(s), none analysed)")
            continue
        t = agg.totals
        prob = covid.get("probability", math.nan)
        prob_text = (
            "n/a"
            if prob is None or math.isnan(prob)
            else f"{prob:.2f}" + (" (low confidence)" if covid.get("low_confidence") else "")
        )
        nlr = agg.ratios["nlr"]
        nlr_text = "n/a (no lymphocyte)" if math.isnan(nlr) else f"{nlr:.2f}"
        flagged = (agg.flags or {}).get("flagged")
        write(
            f"{agg.sample}: {agg.fields_ok}/{agg.fields} images, RBC {t['rbc']}, WBC {t['wbc']}, platelets "
            f"{t['platelets']}; NLR {nlr_text}; COVID-19 probability {prob_text}"
            + (f"; FLAGGED: {'; '.join(agg.flags['flag_reasons'])}" if flagged else "")
        )
    errors = [p for p in result.problems if p.level == ERROR]
    warnings = [p for p in result.problems if p.level == WARNING]
    for p in errors:
        write(f"error: {p.path or p.sample}: {p.message}")
    for p in warnings[:10]:
        write(f"warning: {p.path or p.sample}: {p.message}")
    if len(warnings) > 10:
        write(f"... {len(warnings) - 10} more warning(s) in messages.csv")
    rate = result.info.get("images_per_second")
    write(
        f"{result.images_ok}/{result.images} images analysed in {result.seconds:.1f} s"
        + (f" ({rate:.1f} images/s after loading the models)" if rate else "")
        + f"; outputs in {result.out}"
    )
    write(NOTICE)


def analyze_cli(args: Any) -> int:
    """The ``bloodlib analyze`` command (arguments parsed in :mod:`bloodlib.cli`). Exit codes: 0 ok, 1 an
    input failed, 2 bad arguments or parameters (``--out`` refused included), 3 environment (models
    missing or damaged, outputs not writable, disk full, a lock held too long), 130 interrupted."""
    import dataclasses
    import sys

    from bloodlib.exitcodes import EXIT_ENVIRONMENT, EXIT_USAGE, environment_message, interrupts_as_keyboard
    from bloodlib.fsutil import LockTimeoutError
    from bloodlib.modelcache import CorruptModelError
    from bloodlib.params import ParamsError, load_params
    from bloodlib.pipeline.models import ModelsNotFoundError, how_to_train

    def fail(message: str, code: int) -> int:
        print(f"bloodlib analyze: {message}", file=sys.stderr)
        return code

    try:
        p = load_params("04_pipeline", args.profile)
        overrides = {"models": args.model_set, "um_per_pixel": args.um_per_pixel}
        p = dataclasses.replace(p, **{k: v for k, v in overrides.items() if v is not None})
        if p.um_per_pixel and p.models != "general":
            raise ValueError("--um-per-pixel needs the general models (the BCCD models see every field at 300x300)")
        max_mb = getattr(args, "max_file_mb", None)
        if max_mb is not None and not max_mb > 0:
            raise ValueError(f"--max-file-mb must be > 0, got {max_mb}")
        check_demographics(args.age, args.sex)
        check_output_folder(Path(args.out), args.paths)
    except (ParamsError, ValueError) as err:
        return fail(str(err), EXIT_USAGE)
    try:
        with interrupts_as_keyboard():
            result = analyze(
                args.paths,
                args.out,
                p,
                models_root=args.models,
                age=args.age,
                sex=args.sex,
                annotate_images=not args.no_images,
                progress=not args.quiet,
                max_file_bytes=int(max_mb * 2**20) if max_mb else MAX_FILE_BYTES,
            )
    except KeyboardInterrupt:
        return fail(f"interrupted; {args.out} is left as it was (no partial outputs)", 130)
    except ModelsNotFoundError as err:
        return fail(str(err), EXIT_ENVIRONMENT)
    except CorruptModelError as err:
        rebuild = "" if "rebuild it with" in str(err) else f"; to rebuild the models, {how_to_train(p)}"
        return fail(f"{err}{rebuild}", EXIT_ENVIRONMENT)
    except OutputFolderError as err:  # the folder changed since the check above
        return fail(str(err), EXIT_USAGE)
    except (OSError, LockTimeoutError) as err:
        return fail(f"{environment_message(err)}; {args.out} is left as it was", EXIT_ENVIRONMENT)
    print_report(result)
    return result.exit_code


__all__ = ["AnalyzeResult", "analyze", "analyze_cli", "check_demographics", "print_report"]
