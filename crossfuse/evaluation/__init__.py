"""Evaluation: test metrics, unimodal baselines, subsets, robustness, importance, cost, the report."""
