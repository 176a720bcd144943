"""Evaluation: benchmarks, graders, base-vs-tuned comparison, reports."""
