"""One module per `graphprune` subcommand.

Each module defines `add_parser(subparsers)`, which registers its subcommand and sets `run=<function>`
taking the parsed arguments and returning an exit code; `graphprune.cli.COMMANDS` lists the modules.
"""
