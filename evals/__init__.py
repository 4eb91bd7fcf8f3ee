"""Evaluation on MATH/AIME: datasets, runner, metrics and reports.

Empty for now: the eval runner is tracked as its own issue. Grading of answers against
gold lives in ``ttscale.verifiers.answers`` meanwhile.
"""
