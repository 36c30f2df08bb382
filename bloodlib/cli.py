"""The ``bloodlib`` command line.

bloodlib data list                      where each data set is (BLOODLIB_DATA, cache, missing)
bloodlib data fetch NAME... | --all [--force]
                                        download into the user cache and verify (re-fetch a copy that
                                        fails verification; --force: always)
bloodlib data verify NAME... | --all    hash every file against the registry
bloodlib report [--profile cpu] [--only NAME ...] [--jobs N]
bloodlib train [TASK|all] [--profile cpu] [--nproc N]
                                        train a task's models (default: all) into the model cache;
                                        --nproc N: DDP over N local processes (torchrun's launcher; one per GPU)
bloodlib analyze PATH... [--out DIR] [--models DIR] [--model-set general|bccd] [--um-per-pixel UM] [--age N --sex M|F]
                 [--max-file-mb MB]     smear images -> counts, differential, COVID-19 probability
bloodlib models export FILE [--profile cpu] [--only NAME ...] [--models DIR]
                                        one archive (tar.gz, or .zip) of the trained models a profile's reports use
bloodlib models import FILE [--models DIR] [--sha256 HEX]
                                        verify a bundle and place its models in the model cache
bloodlib models verify FILE             check a bundle's members against its manifest, write nothing
bloodlib kernel [--name bloodlib] [--prefix DIR | --user]
                                        register the Jupyter kernel (with the compute environment)

Every command runs with the environment of :mod:`bloodlib.runtime`, set before torch loads.
Exit codes (:data:`bloodlib.exitcodes.EXIT_CODES`, also in ``bloodlib --help``): 0 ok, 1 some inputs failed, 2 usage or
parameters, 3 environment (disk full, permissions, missing or damaged models, a lock held too long),
130 interrupted (Ctrl-C or SIGTERM). None of these ends in a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bloodlib import runtime
from bloodlib.exitcodes import (
    EXIT_CODES,
    EXIT_ENVIRONMENT,
    EXIT_INTERRUPTED,
    environment_message,
    interrupts_as_keyboard,
)
from bloodlib.params import DEFAULT_PROFILE, PROFILES
from bloodlib.report.runner import KERNEL_NAME

# task -> "module:function(profile: str, root: Path) -> int" training that task's models into
# the model cache outside the notebook (imported lazily: torch is heavy).
TRAINERS: dict[str, str] = {
    "detection": "bloodlib.detection.train:train_cli",
    "wbc": "bloodlib.classification.train:train",
    "general": "bloodlib.general.models:train_cli",
    "covid": "bloodlib.pipeline.covid:train_cli",
}


def _data_names(args: argparse.Namespace) -> list[str]:
    from bloodlib.data import DATASETS, get_spec

    if args.all:
        return list(DATASETS)
    if not args.names:
        raise SystemExit(f"name at least one data set or use --all; known: {', '.join(DATASETS)}")
    for name in args.names:
        try:
            get_spec(name)
        except KeyError as err:
            raise SystemExit(err.args[0]) from None
    return args.names


def cmd_data_list(args: argparse.Namespace) -> int:
    from bloodlib.data import DATASETS, DataNotFoundError, locate

    for name, spec in DATASETS.items():
        try:
            where = str(locate(name, download=False))
        except DataNotFoundError:
            where = "not available (bloodlib data fetch " + name + ")"
        print(f"{name:16s} {where}\n{'':16s} {spec.title}\n{'':16s} {spec.homepage} [{spec.license}]")
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from bloodlib.data import DataNotFoundError, repair

    failed = 0
    for name in _data_names(args):
        try:
            path, note = repair(name, force=args.force)
            print(f"{name}: {path}" + (f" ({note})" if note else ""))
        except DataNotFoundError as err:
            print(f"{name}: FAILED\n{err}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def cmd_data_verify(args: argparse.Namespace) -> int:
    from bloodlib.data import verify

    failed = 0
    for name in _data_names(args):
        result = verify(name)
        if result.ok:
            print(f"{name}: OK ({result.path})")
        else:
            failed += 1
            print(f"{name}: FAILED ({result.path})\n  " + "\n  ".join(result.problems), file=sys.stderr)
    return 1 if failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    from bloodlib.paths import reports_dir
    from bloodlib.report.progress import Console, summary_table
    from bloodlib.report.runner import ReportInterrupted, run_reports

    try:
        with interrupts_as_keyboard():
            runs = run_reports(args.profile, only=args.only, jobs=args.jobs, console=Console())
    except ReportInterrupted as err:
        print(f"bloodlib report: {err}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        print(f"bloodlib report: {err}", file=sys.stderr)
        return 2
    print(summary_table(runs, reports_dir(args.profile)))
    return 0 if all(run.status == "ok" for run in runs) else 1


def cmd_train(args: argparse.Namespace) -> int:
    import contextlib
    import importlib
    import os

    from bloodlib import distributed
    from bloodlib.paths import project_root

    if args.task != "all" and args.task not in TRAINERS:
        known = ", ".join(TRAINERS) or "none yet"
        print(f"bloodlib train: unknown task {args.task!r}; known: {known}, all", file=sys.stderr)
        return 2
    from bloodlib.modelcache import rebuilding_damaged

    if args.nproc < 1:
        print(f"bloodlib train: --nproc must be >= 1, got {args.nproc}", file=sys.stderr)
        return 2
    if args.nproc > 1:
        if "WORLD_SIZE" in os.environ:
            print("bloodlib train: torchrun started this process already; leave out --nproc", file=sys.stderr)
            return 2
        return distributed.launch(args.nproc, ["train", args.task, "--profile", args.profile])
    status = 0
    with distributed.process_group() as where, open(os.devnull, "w") as devnull:
        # rank 0 alone reports; the other processes' errors still reach stderr
        with contextlib.nullcontext() if where.is_main else contextlib.redirect_stdout(devnull):
            for task in TRAINERS if args.task == "all" else [args.task]:
                module_name, function_name = TRAINERS[task].split(":")
                train = getattr(importlib.import_module(module_name), function_name)
                with rebuilding_damaged():  # a damaged cache entry is moved aside and trained again
                    status = max(status, train(args.profile, project_root()))
    return status


def cmd_analyze(args: argparse.Namespace) -> int:
    from bloodlib.pipeline.analyze import analyze_cli

    return analyze_cli(args)


def cmd_models_export(args: argparse.Namespace) -> int:
    from bloodlib.bundles import BundleError, bundle_summary, export_bundle
    from bloodlib.data.download import sha256_file
    from bloodlib.paths import project_root
    from bloodlib.report.runner import select_notebooks

    try:
        notebooks = select_notebooks(project_root(), args.only) if args.only else None
        manifest = export_bundle(args.file, profile=args.profile, notebooks=notebooks, models=args.models)
    except (BundleError, ValueError, OSError) as err:
        print(f"bloodlib models export: {err}", file=sys.stderr)
        return 2
    print("\n".join([f"wrote {args.file}", *bundle_summary(manifest), f"sha256 {sha256_file(args.file)}"]))
    return 0


def cmd_models_import(args: argparse.Namespace) -> int:
    from bloodlib.bundles import BundleError, bundle_summary, import_bundle
    from bloodlib.modelcache import models_root

    try:
        result = import_bundle(args.file, models=args.models, sha256=args.sha256)
    except (BundleError, RuntimeError, OSError) as err:  # RuntimeError: UnsafeArchiveError, a corrupt archive
        print(f"bloodlib models import: {err}", file=sys.stderr)
        return 2
    root = args.models or models_root()
    print("\n".join(bundle_summary(result.manifest)))
    print(f"placed {len(result.placed)} folder(s) in {root}; {len(result.present)} already there")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_models_verify(args: argparse.Namespace) -> int:
    from bloodlib.bundles import BundleError, bundle_summary, read_manifest

    try:
        manifest = read_manifest(args.file)
    except (BundleError, RuntimeError, OSError) as err:
        print(f"bloodlib models verify: {err}", file=sys.stderr)
        return 2
    print("\n".join([*bundle_summary(manifest), "members agree with the manifest (sha256 is checked on import)"]))
    return 0


def cmd_kernel(args: argparse.Namespace) -> int:
    from bloodlib.report.runner import install_kernel

    print(f"kernel {args.name!r} installed in {install_kernel(args.name, prefix=args.prefix, user=args.user)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bloodlib",
        description="Reproducible blood-smear analysis reports.",
        epilog=EXIT_CODES,
        formatter_class=_Formatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="list, fetch and verify the registered data sets")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    data_commands.add_parser("list", help="where each data set is found").set_defaults(func=cmd_data_list)
    for verb, func, text in (
        ("fetch", cmd_data_fetch, "download into the user cache (unless BLOODLIB_DATA has it) and verify"),
        ("verify", cmd_data_verify, "hash every file against the registry's checksums"),
    ):
        sub = data_commands.add_parser(verb, help=text, epilog=EXIT_CODES, formatter_class=_Formatter)
        sub.add_argument("names", nargs="*", metavar="NAME")
        sub.add_argument("--all", action="store_true", help="every registered data set")
        if verb == "fetch":
            sub.add_argument(
                "--force",
                action="store_true",
                help="download again even if the copy in the user cache verifies (it is replaced only once "
                "the new download verifies)",
            )
        sub.set_defaults(func=func)

    report = commands.add_parser(
        "report", help="execute notebooks and render HTML reports", epilog=EXIT_CODES, formatter_class=_Formatter
    )
    report.add_argument("--profile", choices=PROFILES, default=DEFAULT_PROFILE)
    report.add_argument("--only", nargs="+", metavar="NAME", help="notebook names (e.g. 03_covid_diagnosis)")
    report.add_argument("--jobs", type=int, default=1, help="notebooks executed in parallel")
    report.set_defaults(func=cmd_report)

    train = commands.add_parser(
        "train", help="train a task's models into the model cache", epilog=EXIT_CODES, formatter_class=_Formatter
    )
    train.add_argument("task", nargs="?", default="all", help=f"one of: {', '.join(TRAINERS)}, or all (the default)")
    train.add_argument("--profile", choices=PROFILES, default=DEFAULT_PROFILE)
    train.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="train with DistributedDataParallel over N processes on this machine, one per GPU (torchrun's "
        "launcher; for several machines use torchrun --nnodes ... -m bloodlib train instead)",
    )
    train.set_defaults(func=cmd_train)

    analyze = commands.add_parser(
        "analyze",
        help="smear images -> counts, WBC differential, COVID-19 probability (research tool, not a diagnostic device)",
        epilog=EXIT_CODES,
        formatter_class=_Formatter,
    )
    analyze.add_argument("paths", nargs="+", metavar="PATH", help="an image, or a folder of one sample's images")
    analyze.add_argument(
        "--out",
        default="bloodlib-analysis",
        help="output folder (default: ./bloodlib-analysis), replaced as a whole when the run completes; "
        "refused inside an input folder or if it holds other files",
    )
    analyze.add_argument(
        "--models", metavar="DIR", help="models root laid out like BLOODLIB_MODELS (default: the model cache)"
    )
    analyze.add_argument(
        "--model-set",
        choices=["general", "bccd"],
        help="general: trained beyond BCCD, any magnification (the profile's default); bccd: the paper-reproduction models",
    )
    analyze.add_argument(
        "--um-per-pixel",
        type=float,
        metavar="UM",
        help="pixel size in micrometres, if known (e.g. 0.1 for a 100x objective on many cameras); default: "
        "estimate each field's scale from its red cells (general models only)",
    )
    analyze.add_argument("--age", type=float, help="patient age in years (with --sex)")
    analyze.add_argument("--sex", choices=["M", "F", "m", "f"], help="patient sex (with --age)")
    analyze.add_argument(
        "--profile",
        choices=PROFILES,
        default=DEFAULT_PROFILE,
        help="parameters params/<profile>/04_pipeline.yaml (which models, thresholds, batch size)",
    )
    analyze.add_argument("--no-images", action="store_true", help="skip the annotated PNGs")
    analyze.add_argument(
        "--max-file-mb",
        type=float,
        default=200.0,
        metavar="MB",
        help="input files larger than this are refused before they are read (default: 200)",
    )
    analyze.add_argument("--quiet", action="store_true", help="no progress bar")
    analyze.set_defaults(func=cmd_analyze)

    models = commands.add_parser("models", help="export and import bundles of trained models (for a class)")
    models_commands = models.add_subparsers(dest="models_command", required=True)
    export = models_commands.add_parser("export", help="write one archive of a profile's trained models")
    export.add_argument("file", metavar="FILE", help="the bundle to write: .tar.gz (default) or .zip")
    export.add_argument("--profile", choices=PROFILES, default=DEFAULT_PROFILE)
    export.add_argument("--only", nargs="+", metavar="NAME", help="only the models of these notebooks")
    export.add_argument("--models", type=Path, metavar="DIR", help="models root (default: the model cache)")
    export.set_defaults(func=cmd_models_export)
    load = models_commands.add_parser("import", help="verify a bundle and place its models in the model cache")
    load.add_argument("file", metavar="FILE")
    load.add_argument("--models", type=Path, metavar="DIR", help="models root (default: the model cache)")
    load.add_argument("--sha256", metavar="HEX", help="the bundle's sha256 as its maker printed it")
    load.set_defaults(func=cmd_models_import)
    check = models_commands.add_parser("verify", help="check a bundle's members against its manifest")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=cmd_models_verify)

    kernel = commands.add_parser("kernel", help="register this Python as the Jupyter kernel the notebooks use")
    kernel.add_argument("--name", default=KERNEL_NAME, help=f"kernel name (default: {KERNEL_NAME})")
    where = kernel.add_mutually_exclusive_group()
    where.add_argument("--prefix", metavar="DIR", help="install prefix (default: this Python's, e.g. .venv)")
    where.add_argument("--user", action="store_true", help="install for the current user instead")
    kernel.set_defaults(func=cmd_kernel)
    return parser


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the exit-code table's lines as written."""


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit codes are :data:`EXIT_CODES`. Environment errors (disk full, permissions,
    models missing or damaged, lock timeouts) and interrupts end with one message, not a traceback."""
    from bloodlib.fsutil import LockTimeoutError
    from bloodlib.modelcache import CorruptModelError, ModelNotTrainedError

    runtime.configure()  # before any command imports torch
    args = build_parser().parse_args(argv)
    name = "bloodlib " + args.command
    try:
        with interrupts_as_keyboard():
            return args.func(args)
    except KeyboardInterrupt:
        print(f"{name}: interrupted; finished results are kept, partial ones removed", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CorruptModelError, ModelNotTrainedError) as err:
        print(f"{name}: {err}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    except (OSError, LockTimeoutError) as err:
        print(f"{name}: {environment_message(err)}", file=sys.stderr)
        return EXIT_ENVIRONMENT


if __name__ == "__main__":
    sys.exit(main())
