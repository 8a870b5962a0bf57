"""KFP's local runner must not leave ``print`` indented after a run with parallel tasks."""

from __future__ import annotations

import builtins

from kfp.local import logging_utils

from pipelines.runner import print_restored


def test_interleaved_parallel_tasks_leave_print_as_it_was(capsys):
    # Two ParallelFor tasks in threads, in the order that leaks: A swaps print, B swaps
    # A's print, A restores the original, B "restores" A's indenting print.
    original = builtins.print
    with print_restored():
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
