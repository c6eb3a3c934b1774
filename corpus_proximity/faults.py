"""A fault-injection hook for the tests: make a real process stop at a dangerous point so a test can
``kill -9`` it exactly there (tests/test_reliability_kill.py).

``CP_TEST_PAUSE_AT=<point>`` in the environment makes :func:`pause` at that point print
``paused at <point>`` on stderr and sleep (an hour); unset, as in every normal run, it does nothing.
The points: ``publish`` (cluster_corpus.py, after the new tree.json is renamed into the output
folder, before tree_config.json), ``annotate`` (a run's folder half built, the csv written, not the
parquet) and ``swap`` (a whole folder built, about to replace the old one)."""

from __future__ import annotations

import os
import sys
import time

ENV = "CP_TEST_PAUSE_AT"


def pause(point: str) -> None:
    """Stop here (for a test to kill the process) when ``CP_TEST_PAUSE_AT`` names ``point``."""
    if os.environ.get(ENV) == point:
        print(f"paused at {point}", file=sys.stderr, flush=True)
        time.sleep(3600)
