"""`mlx-kv bench ...`: the benchmark group; one module per benchmark."""

from __future__ import annotations

from mlx_kv.commands import bench_niah, bench_ranking, bench_speed, bench_stream
from mlx_kv.commands.options import OneLineParser, SubParsers


def add_parser(sub: SubParsers) -> None:
    benches = sub.add_parser("bench", help="benchmarks against mlx-lm's own caches").add_subparsers(
        dest="bench", required=True, parser_class=OneLineParser)
    for module in (bench_speed, bench_niah, bench_ranking, bench_stream):
        module.add_parser(benches)
