"""What a run records about the code and the data it ran on."""

import subprocess
from pathlib import Path

from crossfuse.tracking import data_version


def test_the_code_version_is_crossfuse_s_commit_wherever_the_data_lives(tmp_path):
    # Data outside any git repository used to record git.commit "unknown": the commit was
    # looked up in the data's folder instead of the code's.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.csv").write_text("id,label\nx,a\n")
    repo = Path(__file__).resolve().parents[2]
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    version = data_version(tmp_path / "data")
    assert version["git.commit"] == head
    assert version["data.manifest_sha256"] != "missing"


# Every family of metric the stages log, as named inside crossfuse.
FLAT_NAMES = ["test_macro_f1", "test_accuracy", "test_log_loss", "test_ece", "test_ece_calibrated",
              "test_log_loss_calibrated", "test_precision_circle-day", "test_f1_a b",
              "test_mood_macro_f1", "fusion_gain_macro_f1", "baseline_text_test_macro_f1",
              "present_image_test_accuracy", "robustness_image_gaussian_auc",
              "importance_permutation_text", "efficiency_head_parameters", "validation_rows",
              "rows_in", "samples_train", "features_image_cache_hits", "train_loss", "val_loss",
              "val_macro_f1", "best_epoch", "best_val_macro_f1", "epochs_run", "temperature",
              "cv_macro_f1_mean"]


def test_every_logged_metric_sits_in_a_ui_section_and_reads_back_under_its_own_name():
    from crossfuse.tracking import flat_metric_name, ui_metric_name

    ui = [ui_metric_name(n) for n in FLAT_NAMES]
    assert all("/" in n for n in ui), [n for n in ui if "/" not in n]
    assert len(set(ui)) == len(ui)
    assert [flat_metric_name(n) for n in ui] == FLAT_NAMES
    sections = {n.split("/")[0] for n in ui}
    assert {"test", "baseline", "robustness", "calibration", "efficiency", "validation"} <= sections
    assert ui_metric_name("test_precision_circle-day") == "per_class/precision_circle-day"
    # Runs logged before sections existed still read.
    assert flat_metric_name("test_macro_f1") == "test_macro_f1"
