"""The quiet console: stages and results on screen, everything in the log file."""

from __future__ import annotations

import io
import logging
import sys

from crossfuse.console import say
from crossfuse.errors import say_error
from pipelines.console import QuietConsole

KFP_START = "12:00:00.001 - INFO - Executing task \x1b[96m'validate'\x1b[0m\n"
KFP_END = "12:00:09.001 - INFO - Task \x1b[96m'validate'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m\n"
KFP_FAIL = "12:00:09.001 - INFO - Task \x1b[96m'train'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m\n"
CHATTER = ('    Got executor_input:\n    {"inputs": {"parameterValues": {"config_json": "{...}"}}}\n'
           "    Skipping registering function expect_column_values_to_not_be_null\n"
           "    Calculating Metrics:  50%|#####     | 20/40\rCalculating Metrics: 100%|##########| 40/40\n")


def test_only_stages_and_said_lines_reach_the_screen_and_the_log_keeps_all(tmp_path):
    screen = io.StringIO()
    with QuietConsole(tmp_path / "run.log", out=screen):
        sys.stdout.write(KFP_START)
        print(CHATTER, end="")
        say("validation passed for sample: 60 rows in = 60 valid + 0 rejected")
        logging.getLogger("great_expectations").warning("a harmless warning")
        sys.stderr.write("UserWarning: something a library says\n")
        sys.stdout.write(KFP_END)
    shown = screen.getvalue().splitlines()
    assert shown[0] == "▶ validate"
    assert shown[1] == "  validation passed for sample: 60 rows in = 60 valid + 0 rejected"
    assert shown[2].startswith("✓ validate (") and len(shown) == 3
    log = (tmp_path / "run.log").read_text()
    assert "Got executor_input" in log and "Skipping registering function" in log
    assert "UserWarning: something a library says" in log
    assert sys.stdout is not None and not isinstance(sys.stdout, QuietConsole)  # restored


def test_a_failing_stage_shows_its_last_lines(tmp_path):
    screen = io.StringIO()
    with QuietConsole(tmp_path / "run.log", out=screen) as console:
        sys.stdout.write(KFP_START.replace("validate", "train"))
        print("Traceback (most recent call last):\nValueError: need train and val samples")
        sys.stdout.write(KFP_FAIL)
    shown = screen.getvalue()
    assert "✗ train (" in shown and "FAILURE" in shown
    assert "| ValueError: need train and val samples" in shown
    assert console.failed == ["train"] and str(tmp_path / "run.log") in shown


def test_verbose_shows_everything(tmp_path):
    screen = io.StringIO()
    with QuietConsole(tmp_path / "run.log", verbose=True, out=screen):
        print(CHATTER, end="")
        say("a result")
    assert "Got executor_input" in screen.getvalue() and "a result" in screen.getvalue()
    assert "::crossfuse::" not in screen.getvalue()


def test_a_problem_the_user_can_fix_is_kept_as_the_message_not_the_traceback(tmp_path):
    screen = io.StringIO()
    with QuietConsole(tmp_path / "run.log", out=screen) as console:
        sys.stdout.write(KFP_START)
        say_error("validation FAILED for sample: 3 rows in = 2 valid + 1 rejected\n"
                  "  line 4 (id='s2') column 'image': empty file")
        print("Traceback (most recent call last):\nValidationFailed: validation FAILED")
        sys.stdout.write(KFP_FAIL.replace("train", "validate"))
    shown = screen.getvalue()
    assert console.user_errors == ["validation FAILED for sample: 3 rows in = 2 valid + 1 rejected",
                              "  line 4 (id='s2') column 'image': empty file"]
    assert "✗ validate (" in shown and "Traceback" not in shown and "line 4" not in shown
    assert "Traceback" in (tmp_path / "run.log").read_text()


def test_colour_codes_reach_only_a_terminal(tmp_path):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for screen, coloured in ((io.StringIO(), False), (Terminal(), True)):
        with QuietConsole(tmp_path / "run.log", verbose=True, out=screen):
            sys.stdout.write(KFP_END)
        assert ("\x1b[" in screen.getvalue()) is coloured
