"""Reports of a run: the label-issue table (and, later, HTML pages and plots)."""
from noisyft.report.label_issues import detection_metrics, label_issues_frame

__all__ = ["label_issues_frame", "detection_metrics"]
