"""`graphprune graph`: build the graph of an experiment's baseline (the stage is
`graphprune.stages.graph`)."""

from __future__ import annotations

import argparse

from graphprune.commands.common import add_experiment_arguments, load_experiment


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("graph", help="build the network graph of an experiment's baseline")
    add_experiment_arguments(parser)
    # No defaults here: the stage's apply (stages.graph.DEFAULT_*), and `--help` need not import torch-geometric.
    parser.add_argument("--top-k", type=int, help="strongest input-channel edges kept per channel (default: 8)")
    parser.add_argument("--calibration-size", type=int,
                        help="training images for the activation statistics (default: 64)")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from graphprune.stages.graph import extract_graph  # torch-geometric: only when the command runs

    config, experiment = load_experiment(args)
    given = {"top_k": args.top_k, "calibration_size": args.calibration_size}
    graph = extract_graph(config, experiment, device=args.device,
                          **{name: value for name, value in given.items() if value is not None})
    print(f"{experiment.name}: {graph.num_channel_nodes} channel nodes, {graph.num_layer_nodes} layer nodes, "
          f"{graph.data.edge_index.shape[1]} edges in {graph.build_seconds:.1f} s "
          f"-> {config.paths(experiment.name).graph()}")
    return 0
