"""graphprune: resource-aware channel pruning of CNNs with graph-based reinforcement learning."""

__version__ = "0.1.0"
