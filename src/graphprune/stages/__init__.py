"""The pipeline stages, one module a stage, in pipeline order: `pretrain` (the baseline), `graph` (the
network graph of the baseline), `search` (one method at one budget: the mask), `agent` (a shared agent over
several experiments), `finetune` (the mask's pruned network, and its test accuracy) and `report` (the tables
and figures of a config). Each reads and writes result files under `graphprune.paths`; the CLI's commands
(graphprune.commands) call them. This `__init__` imports nothing, so the report stage stays torch-free.
"""
