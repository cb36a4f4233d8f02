"""The `mlx-kv` commands, one module each.

Every command module has `add_parser(subparsers)`, which declares its
options and sets `run` (args -> exit status) as the parser's default;
`mlx_kv.cli` only composes the parsers and dispatches. Command modules
import MLX, models and benchmarks inside `run`, so building the parser
(and `--help`) never loads MLX before the CLI's OpenBLAS re-exec, and only
`chat` ever imports the terminal app.
"""
