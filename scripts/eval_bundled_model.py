#!/usr/bin/env python
"""Full-cache accuracy of a model on the synthetic tasks (MLX, mlx-lm's default KVCache).

Greedy decoding, batch 1, chunked prefill, stop at EOS. Seeds start at
``--seed`` (default 2*10**9; training used seeds < 10**9), and trial ``i`` puts
the (first) needle at depth ``(i + 0.5) / trials``, so depths are spread evenly.

    python scripts/eval_bundled_model.py --tasks single_needle,multi_key \\
        --lengths 2048,4096 --trials 200 --json runs/eval.jsonl

On Linux, preload OpenBLAS for speed (see mlx_kv/blas.py):
    LD_PRELOAD=$(ldconfig -p | grep -m1 'libopenblas.so.0 ' | awk '{print $NF}') python ...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlx_kv import tasks as T  # noqa: E402

DEFAULT_MODEL = str(ROOT / "models" / "mlx-kv-tiny")


def answer(model, tokenizer, prompt: str, max_tokens: int, prefill_step: int = 512) -> str:
    """Greedy reply to ``prompt`` with a fresh default cache."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step
    from mlx_lm.models.cache import make_prompt_cache

    ids = mx.array(tokenizer.encode(prompt))
    cache = make_prompt_cache(model)
    out = []
    eos = set(tokenizer.eos_token_ids)
    for tok, _ in generate_step(ids, model, max_tokens=max_tokens, prompt_cache=cache,
                                prefill_step_size=prefill_step):
        tok = int(tok)
        if tok in eos:
            break
        out.append(tok)
    return tokenizer.decode(out)


class TorchRunner:
    """Dev-only cross-check: the same weights in PyTorch (scripts/train_bundled_model.py's
    model), greedy decoding with a simple KV cache. Much faster than MLX's CPU
    attention here; ``reference_logits.npz`` ties the two implementations together."""

    def __init__(self, model_dir: str, threads: int = 2):
        import torch
        from safetensors.torch import load_file

        sys.path.insert(0, str(ROOT / "scripts"))
        import train_bundled_model as TB

        torch.set_num_threads(threads)
        self.torch = torch
        self.cfg = json.loads((Path(model_dir) / "config.json").read_text())
        self.model = TB.build_model(self.cfg)
        sd = load_file(str(Path(model_dir) / "model.safetensors"))
        self.model.load_state_dict(sd, strict=False)
        self.model.eval()

    def _rope(self, pos0: int, n: int):
        torch = self.torch
        import train_bundled_model as TB

        inv = torch.from_numpy(TB.rope_inv_freq(self.cfg))  # rope_scaling included, as mlx-lm does
        f = torch.outer(torch.arange(pos0, pos0 + n, dtype=torch.float32), inv)
        emb = torch.cat([f, f], -1)
        return emb.cos()[None, None], emb.sin()[None, None]

    def _step(self, ids, cache):
        torch = self.torch
        F = torch.nn.functional
        cfg = self.cfg
        nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
        pos0 = 0 if not cache else cache[0][0].shape[2]
        B, n = ids.shape
        cos, sin = self._rope(pos0, n)

        def rot(x):
            x1, x2 = x.chunk(2, -1)
            return torch.cat([-x2, x1], -1)

        x = self.model.model.embed_tokens(ids)
        for li, layer in enumerate(self.model.model.layers):
            a = layer.self_attn
            h = layer.input_layernorm(x)
            q = a.q_proj(h).view(B, n, nh, hd).transpose(1, 2)
            k = a.k_proj(h).view(B, n, nkv, hd).transpose(1, 2)
            v = a.v_proj(h).view(B, n, nkv, hd).transpose(1, 2)
            q = q * cos + rot(q) * sin
            k = k * cos + rot(k) * sin
            if len(cache) > li:
                k = torch.cat([cache[li][0], k], 2)
                v = torch.cat([cache[li][1], v], 2)
                cache[li] = (k, v)
            else:
                cache.append((k, v))
            o = F.scaled_dot_product_attention(q, k, v, is_causal=(n > 1), enable_gqa=True)
            x = x + a.o_proj(o.transpose(1, 2).reshape(B, n, nh * hd))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.model.logits(self.model.model.norm(x[:, -1]))

    def answer(self, tokenizer, prompt: str, max_tokens: int) -> str:
        torch = self.torch
        eos = set(tokenizer.eos_token_ids)
        out = []
        cache: list = []
        with torch.no_grad():
            logits = self._step(torch.tensor([tokenizer.encode(prompt)]), cache)
            for _ in range(max_tokens):
                t = int(logits.argmax(-1))
                if t in eos:
                    break
                out.append(t)
                logits = self._step(torch.tensor([[t]]), cache)
        return tokenizer.decode(out)


def run_eval(model, tokenizer, tasks, lengths, trials, seed0, verbose=False, on_result=None, runner=None):
    from mlx_kv.bench.niah import wilson_interval  # the benchmark's interval (imports MLX, so only here)

    results = []
    for n_tokens in lengths:
        for task in tasks:
            total = 0.0
            exact = 0
            t0 = time.time()
            for i in range(trials):
                depth = (i + 0.5) / trials
                s = T.make_sample(task, n_tokens, tokenizer, depth=depth, seed=seed0 + i)
                prompt = T.format_prompt(tokenizer, s)
                max_new = 12 * len(s.answer) + 16
                if runner is not None:
                    pred = runner.answer(tokenizer, prompt, max_new)
                else:
                    pred = answer(model, tokenizer, prompt, max_tokens=max_new)
                sc = s.score(pred)
                total += sc
                exact += int(sc == 1.0)
                if verbose:
                    print(f"  {task} {n_tokens} #{i} depth={depth:.2f} score={sc:.2f} expected={s.answer} got={pred!r}",
                          flush=True)
            acc = total / trials if trials else 0.0
            lo, hi = wilson_interval(total, trials)  # (0, 1) when there were no trials
            rec = {"task": task, "context_tokens": n_tokens, "trials": trials, "accuracy": round(acc, 4),
                   "exact": round(exact / trials, 4) if trials else 0.0, "ci_low": round(lo, 4),
                   "ci_high": round(hi, 4), "seed": seed0, "backend": "torch" if runner is not None else "mlx", "s_per_trial": round((time.time() - t0) / max(trials, 1), 3)}
            results.append(rec)
            if on_result:
                on_result(rec)
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--tasks", default="single_needle,multi_key,variable_tracking")
    ap.add_argument("--lengths", default="2048,4096")
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seed", type=int, default=2 * 10**9)
    ap.add_argument("--json", default=None, help="append one JSON object per (task, length) to this file ('-' = stdout)")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--backend", choices=("mlx", "torch"), default="mlx",
                    help="mlx (the runtime; default) or torch (dev-only cross-check, needs torch)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (--backend torch)")
    args = ap.parse_args(argv)

    import mlx_lm

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    for t in tasks:
        if t not in T.TASKS:
            raise SystemExit(f"unknown task {t!r}; expected one of {', '.join(T.TASKS)}")
    lengths = [int(x) for x in args.lengths.split(",")]
    model, tokenizer = mlx_lm.load(args.model)
    out = None
    if args.json and args.json != "-":
        out = open(args.json, "a")

    def emit(rec):
        line = json.dumps(rec)
        if args.json == "-":
            print(line, flush=True)
        elif out:
            out.write(line + "\n")
            out.flush()
        print(f"{rec['task']:<18} {rec['context_tokens']:>6} tokens  acc {rec['accuracy']:.3f} "
              f"[{rec['ci_low']:.3f}, {rec['ci_high']:.3f}]  exact {rec['exact']:.3f}  n={rec['trials']}  "
              f"{rec['s_per_trial']:.2f}s/trial", file=sys.stderr if args.json == "-" else sys.stdout, flush=True)

    runner = TorchRunner(args.model, args.threads) if args.backend == "torch" else None
    run_eval(model, tokenizer, tasks, lengths, args.trials, args.seed, args.verbose, emit, runner)


if __name__ == "__main__":
    main()
