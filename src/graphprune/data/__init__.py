"""The data: `datasets` (the datasets graphprune knows and their settings, as plain data without torch, for the
config code) and `splits` (loading a dataset and splitting it deterministically into train / search / test;
imports torch). This `__init__` imports nothing, so `datasets` stays importable without torch.
"""
