"""Evaluations: GSM8K samples and grading, rollouts of a model through a chat endpoint, and the
quality of a tree against labelled corpora (``quality``, ``labelled``)."""
