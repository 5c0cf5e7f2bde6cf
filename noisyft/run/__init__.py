"""A run directory's files, in one home: their names (``files``), the directory while a run uses it
(``rundir``), the accuracy summary (``summary``), the label-issue table (``label_issues``), the loss/GMM
records (``losses``) and the saved model (``model``). Methods, the API and the report all go through these.
"""
