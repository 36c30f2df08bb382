"""Report runner (papermill -> nbconvert HTML -> index) and the notebooks' report writer."""

from bloodlib.report.artifacts import ReportWriter

__all__ = ["ReportWriter"]
