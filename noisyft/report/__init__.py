"""Reports of a run: the label-issue table, and the HTML page with its plots (``html.write_report``)."""
from noisyft.report.label_issues import detection_metrics, label_issues_frame

__all__ = ["label_issues_frame", "detection_metrics"]
