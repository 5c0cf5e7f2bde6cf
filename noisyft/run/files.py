"""Which files a run directory holds: their names (one place) and what each holds. Every write is atomic.

Layout::

    .noisyft-run         marker written first: only a folder holding it (or a pre-marker run's config.json)
                         is treated as a run; any other non-empty folder is refused as --out
    .lock                flock held by the process using the run (pid, host, start time inside)
    config.json          resolved configuration (refuses to mix with another config, unless the run never
                         did any work: then it restarts with the new one)
    labels.csv           the given labels used (after noise injection) and true labels if known
    noise.json           noise kind, requested/realised rate, seed, transition counts
    data.json            what loading the data found (dataset facts, skipped images)
    optim.json           the LP and FFT optimiser settings used
    metrics.jsonl/.csv   one record per epoch and phase (JSONL is the source of truth; the CSV is
                         the same records flattened, rewritten after every record)
    selection.jsonl/.csv one record per selection step
    tensorboard/         TensorBoard event files: scalar ``<stream>/<key>`` for every numeric
                         field (nested dicts as ``<stream>/<key>/<sub>``) at step = the record's
                         1-based position in its stream, so metrics count LP epochs first and
                         FFT epochs continue (E_LP + e); selection steps are the FFT epochs.
                         Rewritten from the checkpoint's records on resume (no duplicate steps).
    losses/              per-sample CE losses (float32 .npy, training-set order) and the fitted
                         per-class GMM (.json) of every selection epoch and the final model
    timings.json         wall seconds per phase
    model.safetensors    final weights;  summary.json  headline numbers
    label_issues.csv     one row per training sample, most suspect first
    checkpoint.pt        latest epoch's training state + logs (resume: LP epochs too, tag ``lp``); progress.json
                         says which
    state.json           which phases finished
    report/              ``noisyft report``'s index.html and its PNGs
"""

MARKER = ".noisyft-run"  # written first into every run directory: what makes a folder "a noisyft run"
FORMAT = "noisyft-run/1"  # config.json's "format" field
CONFIG = "config.json"
LABELS = "labels.csv"
NOISE = "noise.json"
DATA = "data.json"
OPTIM = "optim.json"
LOG_STREAMS = ("metrics", "selection")  # <stream>.jsonl / <stream>.csv
METRICS_LOG, SELECTION_LOG = (f"{stream}.jsonl" for stream in LOG_STREAMS)
TENSORBOARD_DIR = "tensorboard"
LOSSES_DIR = "losses"
TIMINGS = "timings.json"
MODEL = "model.safetensors"
SUMMARY = "summary.json"
LABEL_ISSUES = "label_issues.csv"
CHECKPOINT = "checkpoint.pt"
PROGRESS = "progress.json"
STATE = "state.json"
REPORT_DIR = "report"
# Files whose presence means a run did real work (a checkpoint, a finished phase, logged epochs, outputs).
WORK_FILES = (CHECKPOINT, MODEL, LABEL_ISSUES, SUMMARY)
# What a finished run holds (besides "done" in state.json): what predict and report read.
FINISHED_FILES = (SUMMARY, LABEL_ISSUES, LABELS, MODEL, CONFIG)
