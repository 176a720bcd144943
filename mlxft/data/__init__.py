"""Data: sources -> formats -> token ids and loss masks -> batches."""
