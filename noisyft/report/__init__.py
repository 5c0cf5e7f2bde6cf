"""The HTML report of a finished run (``html.write_report``), its figures (``plots``) and the t-SNE of
features before/after fine-tuning (``embedding``). It reads the run through :mod:`noisyft.run`."""
