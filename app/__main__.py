"""``python -m app [--fake] [-c | --resume NAME] [--model M] [--budget B] [--policy P]``: open the TUI.

Why besides ``mlx-kv chat``: ``--fake`` runs the app on the scripted engine
(``app.fake_engine``), to work on the UI or try it without a model.
"""

from __future__ import annotations

import argparse

from app.app import MlxKvApp, run_app
from mlx_kv.commands.options import budget_arg


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m app", description="mlx-kv terminal chat")
    ap.add_argument("--model", default=None, help="a .gguf file, a model folder, a hub id or mlx-kv-tiny (default: the default model, else mlx-kv-tiny)")
    ap.add_argument("--budget", type=budget_arg, default=None,
                    help="KV heap budget: tokens per layer (8192), a size (2GB, 512MiB) or auto")
    ap.add_argument("--policy", default=None, help="eviction policy")
    ap.add_argument("--fake", action="store_true", help="use the scripted fake engine (no MLX)")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("-c", "--continue", dest="continue_last", action="store_true",
                       help="reopen the most recent conversation")
    which.add_argument("--resume", metavar="NAME", default=None, help="reopen the saved conversation NAME")
    args = ap.parse_args()
    if args.fake:
        from app.fake_engine import FakeSession

        FakeSession.piece_delay = 0.03
        FakeSession.ingest_delay = 0.02
        MlxKvApp(args.model, args.budget, args.policy, session_cls=FakeSession,
                 continue_last=args.continue_last, resume=args.resume).run()
    else:
        run_app(args.model, args.budget, args.policy, continue_last=args.continue_last, resume=args.resume)


if __name__ == "__main__":
    main()
