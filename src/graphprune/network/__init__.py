"""The network model: channel groups and masks, their cost, the graph of a network, and its evaluation.

`pruning` (channel groups, masks, masked forward, physical removal), `layer_calls` (the traced layer calls and
their widths as functions of the kept counts, read by both `cost` and `latency`), `cost` (analytic FLOPs and
parameters), `budget` (the metrics and budgets, torch-free), `latency` (measured and predicted latency),
`sliced` (the pruned forward on sliced tensors), `root_channels`, `graph` (the network as the agent's graph),
`evaluate` (accuracy and BN recalibration) and `search_eval` (search-time accuracy of a mask). Nothing here
chooses masks, runs a stage or knows the CLI: this package imports none of methods, stages, commands, api or
cli (tests/test_layout.py). This `__init__` imports nothing, so the torch-free `budget` stays importable
without torch.
"""
