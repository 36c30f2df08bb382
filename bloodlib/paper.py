"""The seed paper's published numbers (Tables 2-4), transcribed in ``paper_results.yaml``.

Reports put them beside ours; ``null`` marks a value the paper's text does not give.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PAPER_RESULTS = Path(__file__).with_name("paper_results.yaml")


def paper_results(section: str | None = None) -> dict[str, Any]:
    """All transcribed results, or one section (``task1_detection``, ``task2_wbc_subtypes``, ``task3_covid``)."""
    results = yaml.safe_load(PAPER_RESULTS.read_text(encoding="utf-8"))
    if section is None:
        return results
    if section not in results:
        raise KeyError(f"no section {section!r} in {PAPER_RESULTS}; sections: {', '.join(results)}")
    return results[section]
