"""KFP's local runner must not leave ``print`` indented, or the root logger writing to a
stale stream, after a run with parallel tasks."""

from __future__ import annotations

import builtins
import contextlib
import io
import logging

from kfp.local import logging_utils

from pipelines.runner import output_restored


def test_interleaved_parallel_tasks_leave_print_as_it_was(capsys):
    # Two ParallelFor tasks in threads, in the order that leaks: A swaps print, B swaps
    # A's print, A restores the original, B "restores" A's indenting print.
    original = builtins.print
    with output_restored():
        task_a = logging_utils.indented_print()
        task_b = logging_utils.indented_print()
        task_a.__enter__()
        task_b.__enter__()
        task_a.__exit__(None, None, None)
        task_b.__exit__(None, None, None)
        leaked = builtins.print is not original
    assert leaked, "KFP no longer leaks print this way; print_restored may be unnecessary"
    assert builtins.print is original
    print("summary")
    assert capsys.readouterr().out == "summary\n"


def test_interleaved_parallel_tasks_leave_the_root_logger_as_it_was():
    # The same interleaving with KFP's per-task logger swap: task B saves A's handler (on the
    # stdout of A's moment) as "original" and puts it back after A restored the real ones.
    root = logging.getLogger()
    before = root.handlers[:]
    with output_restored():
        task_a = logging_utils.local_logger_context()
        task_b = logging_utils.local_logger_context()
        with contextlib.redirect_stdout(io.StringIO()):
            task_a.__enter__()
        task_b.__enter__()
        task_a.__exit__(None, None, None)
        task_b.__exit__(None, None, None)
        leaked = root.handlers != before
    assert leaked, "KFP no longer leaks handlers this way; output_restored may be unnecessary"
    assert root.handlers == before
