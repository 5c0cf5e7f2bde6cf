"""noisyft.run.summary: per-phase accuracies and the delivered model's headline, from metrics records."""
from noisyft.run.summary import accuracy_summary, headline_text

TURN_LOG = [{"phase": "lp", "epoch": 1, "test_acc": 0.60}, {"phase": "lp", "epoch": 2, "test_acc": 0.70},
            {"phase": "fft", "epoch": 1, "test_acc": 0.66}, {"phase": "fft", "epoch": 2, "test_acc": 0.64}]


def test_probe_epochs_never_count_as_the_fine_tuned_model_s():
    acc = accuracy_summary(TURN_LOG)
    assert acc["probe"]["best_test_acc"] == 0.70 and acc["probe"]["best_epoch"] == "lp:2"
    assert (acc["fine_tuned"]["best_test_acc"], acc["fine_tuned"]["last_test_acc"]) == (0.66, 0.64)
    assert (acc["test_acc"], acc["test_acc_rule"], acc["test_acc_epoch"], acc["delivered_phase"]) == (
        0.64, "last epoch", "fft:2", "fft")
    assert headline_text(acc) == "test acc 64.0 (last epoch) | probe best 70.0 | fine-tuned best/last 66.0/64.0"


def test_validation_selects_within_the_delivered_phase():
    """A probe epoch with the best validation accuracy is not what TURN delivers: the pick is among fft epochs."""
    log = [dict(r, val_acc=v) for r, v in zip(TURN_LOG, (0.5, 0.9, 0.6, 0.7))]
    acc = accuracy_summary(log)
    assert (acc["test_acc"], acc["test_acc_rule"], acc["test_acc_epoch"]) == (0.64, "val-selected", "fft:2")
    assert acc["probe"]["val_selected_test_acc"] == 0.70 and acc["fine_tuned"]["val_selected_val_acc"] == 0.7
    assert "(last epoch; val-selected 64.0 @ fft:2)" in headline_text(acc)


def test_a_method_s_own_validation_rule_names_the_delivered_epoch():
    """consensus delivers its last epoch unless an earlier one is clearly better on validation: the headline is the
    epoch it names, and the arg-max stays beside it; an epoch it does not name (or of another phase) changes nothing."""
    log = [dict(r, val_acc=v) for r, v in zip(TURN_LOG, (0.5, 0.9, 0.7, 0.6))]
    assert accuracy_summary(log)["test_acc_epoch"] == "fft:1"
    acc = accuracy_summary(log, delivered_epoch="fft:2")
    assert (acc["test_acc"], acc["test_acc_rule"], acc["test_acc_epoch"]) == (0.64, "val-selected", "fft:2")
    assert (acc["fine_tuned"]["val_argmax_test_acc"], acc["fine_tuned"]["val_argmax_epoch"]) == (0.66, "fft:1")
    assert "val_argmax_test_acc" not in acc["probe"] and acc["probe"]["val_selected_epoch"] == "lp:2"
    assert accuracy_summary(log, delivered_epoch="fft:9") == accuracy_summary(log)


def test_probe_only_method_detector_phases_and_no_test_split():
    lp = accuracy_summary([{"phase": "lp", "epoch": e, "test_acc": a} for e, a in ((1, 0.5), (2, 0.4))])
    assert lp["delivered_phase"] == "lp" and lp["test_acc"] == 0.4 and "fine_tuned" not in lp
    assert headline_text(lp) == "test acc 40.0 (last epoch) | probe best/last 50.0/40.0"
    deft = accuracy_summary([{"phase": "detect", "epoch": 1, "detector_test_acc": 0.8},
                             {"phase": "fft", "epoch": 1, "test_acc": 0.7}])
    assert deft["detector"]["last_test_acc"] == 0.8 and deft["test_acc"] == 0.7 and "probe" not in deft
    other = accuracy_summary(TURN_LOG + [{"phase": "ssl", "epoch": 1, "test_acc": 0.9}])
    assert other["delivered_phase"] == "ssl" and other["test_acc"] == 0.9 and other["other_phases"]["ssl"]["epochs"] == 1
    assert accuracy_summary([{"phase": "lp", "epoch": 1, "train_loss": 1.0}]) == {} and headline_text({}) is None
