"""Throughput of `bloodlib analyze`'s inference beside torchvision's ssd300_vgg16, written as JSON.

    BLOODLIB_MODELS=/path/to/models python bench/pipeline_speed.py [--profile cpu] [--images 128]
        [--torchvision-images 16] [--repeats 3] [--out bench/results/pipeline_speed.json]

Needs the profile's trained models (`bloodlib train --profile cpu`) and BCCD (BLOODLIB_DATA or the
cache). See bloodlib.pipeline.speed for what is measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from bloodlib import runtime

    runtime.configure()  # before torch loads: idle OpenMP threads sleep, the cores may be shared
    from bloodlib.data import locate
    from bloodlib.fsutil import atomic_write_text
    from bloodlib.params import load_params
    from bloodlib.pipeline.models import ModelsNotFoundError
    from bloodlib.pipeline.speed import run_bench

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", help="params/<profile>/04_pipeline.yaml (default: cpu)")
    parser.add_argument("--images", type=int, default=128, help="BCCD images per pipeline run")
    parser.add_argument("--torchvision-images", type=int, default=16, help="BCCD images per torchvision run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (the median is reported)")
    parser.add_argument("--models", help="models root (default: BLOODLIB_MODELS or the user cache)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "pipeline_speed.json"))
    args = parser.parse_args(argv)
    try:
        result = run_bench(
            load_params("04_pipeline", args.profile),
            locate("BCCD") / "JPEGImages",
            images=args.images,
            torchvision_images=args.torchvision_images,
            repeats=args.repeats,
            models_root=Path(args.models) if args.models else None,
            log=lambda line: print(line, file=sys.stderr),
        )
    except (ModelsNotFoundError, ValueError) as err:
        print(f"pipeline_speed: {err}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2) + "\n"
    atomic_write_text(Path(args.out), text)
    print(text, end="")
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
