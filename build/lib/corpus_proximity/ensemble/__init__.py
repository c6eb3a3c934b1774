"""Stability of the taxonomy over an ensemble of runs (``runs``, ``compare``, ``registry``), and greedy
MDL merging of features by coactivation (``merge``, ``merge_stage``)."""
