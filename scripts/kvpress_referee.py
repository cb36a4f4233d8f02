"""Referee for the retention benchmark: NVIDIA kvpress presses on SmolLM2-135M-Instruct.

Dev-only: runs in the PyTorch reference venv (see scripts/reference_logits.py),
never imported by mlx_kv.

    # a throwaway demo file (real prose from pydoc_data/topics.py + needles)
    /work/venvs/ref/bin/python scripts/kvpress_referee.py --make-demo /tmp/demo.jsonl --demo-n 10
    # the referee
    /work/venvs/ref/bin/python scripts/kvpress_referee.py /tmp/demo.jsonl \
        --ratios 0.25,0.5,0.75 --out /tmp/cells.jsonl --details /tmp/details.jsonl

Input JSONL, one sample per line:
    {"id", "task", "depth", "context_tokens", "doc_ids", "question_ids",
     "answers", "max_new_tokens"}
doc_ids: ids of the rendered conversation up to the end of the document's user
turn; question_ids: the rest (question turn + generation prompt).

Protocol (kvpress's KVPressTextGenerationPipeline._forward/generate_answer,
re-implemented here on token ids): prefill doc_ids once with the press active
(`with press(model): model.model(input_ids=doc, past_key_values=cache)`), one
compression; then feed question_ids with no press, with position ids
continuing from len(doc_ids) whatever the cache kept; greedy decode up to
max_new_tokens, stopping at the model's EOS (id 2, <|im_end|>); decode with
skip_special_tokens.  `--check-pipeline` also runs kvpress's own pipeline
_forward on the first sample of every cell and fails if the text differs.

Ratio = kvpress compression_ratio = fraction of the document's KV pairs
REMOVED (0.75 keeps 25%).  "full" is run once (ratio 0).

Score of one trial = fraction of `answers` found as whole words: the answer's
[A-Za-z0-9]+ tokens (lowercased) must occur as a contiguous run of the
prediction's tokens.  Cell: trials, correct (sum of scores), accuracy, 95%
Wilson interval (z = 1.96, on accuracy with n = trials), seconds per trial.

Attention: every press runs with one attention function registered here with
transformers' AttentionInterface ("kvref"): SDPA normally, an eager float32
softmax that also returns the weights during prefill when the press needs them
(ObservedAttentionPress); wrapped in kvpress's attention_patch so head-wise
masking (AdaKVPress, KVzipPress) applies.  The stock "sdpa" returns no weights
(ObservedAttention asserts) and the stock "eager" is refused by AdaKV and
KVzip ("eager mode not supported"), and "eager" bypasses kvpress's patch.

Memory: the ScorerPresses (SnapKV, TOVA, ...) really shrink the cache.
AdaKVPress and KVzipPress do NOT: the cache keeps every entry and the pruned
keys are overwritten at each attention call by a fake key whose attention
weight underflows to zero (kvpress attention_patch.py), so their
kv_kept_fraction is the unmasked fraction while the memory is the full cache.

Speed (measured on the 2-core shared dev machine, ~1.1k-token demo trials,
16 new tokens): float32 full-cache trials cost ~3.5-4 CPU-seconds (KVzip ~12,
its reconstruction passes); `--dtype bfloat16` halves that (this CPU has AMX
bf16; prefill ~3-4x faster) but changed 5 of 15 greedy outputs after the
answer, so float32 stays the default.  When other processes hold the cores,
`--threads 1` was as fast as 2, and OpenMP spin-waiting (now PASSIVE by
default) made 2-thread trials several times slower.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
# On a shared 2-core machine, OpenMP's default spin-waiting made 2-thread runs
# several times slower (and burn 3-4x the CPU) whenever another process held a
# core; passive waiting removes that.  Set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
warnings.filterwarnings("ignore")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_GGUF = Path("/work/models-src/SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_PRESSES = [
    "full",
    "observed_attention",
    "snapkv",
    "tova",
    "streaming_llm",
    "random",
    "knorm",
    "expected_attention",
    "keydiff",
    "adakv_expected_attention",
    "kvzip",
]
EXTRA_PRESSES = ["adakv_expected_attention_eps0.01"]
DEFAULT_RATIOS = [0.25, 0.5, 0.75, 0.875]

# ---------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z0-9]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def score_prediction(prediction: str, answers: list[str]) -> float:
    if not answers:
        return 0.0
    pred = words(prediction)
    found = 0
    for a in answers:
        aw = words(a)
        n = len(aw)
        if n and any(pred[i : i + n] == aw for i in range(len(pred) - n + 1)):
            found += 1
    return found / len(answers)


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion (successes may be fractional)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


# ---------------------------------------------------------------------------
# attention
# ---------------------------------------------------------------------------


class _AttnState:
    need_weights = False


ATTN_NAME = "kvref"


def register_attention():
    import torch
    import torch.nn.functional as F
    from kvpress.attention_patch import attention_patch
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    def kvref_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        # query [b, hq, q, d]; key/value [b, hkv, k, d]
        q_len, k_len = query.shape[2], key.shape[2]
        if scaling is None:
            scaling = query.shape[-1] ** -0.5
        if attention_mask is not None:
            mask = attention_mask[:, :, :, :k_len]
        elif q_len == 1:
            mask = None
        else:  # causal, queries are the last q_len positions
            mask = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(k_len - q_len)
        if _AttnState.need_weights and q_len > 1:
            n_rep = query.shape[1] // key.shape[1]
            k = key.repeat_interleave(n_rep, dim=1)
            v = value.repeat_interleave(n_rep, dim=1)
            w = torch.matmul(query.float(), k.float().transpose(2, 3)) * scaling
            if mask is not None:
                w = w.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else w + mask.float()
            w = torch.softmax(w, dim=-1)
            out = torch.matmul(w.to(value.dtype), v)
            return out.transpose(1, 2).contiguous(), w.to(query.dtype)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling, enable_gqa=True)
        return out.transpose(1, 2).contiguous(), None

    AttentionInterface.register(ATTN_NAME, attention_patch(kvref_attention))
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTN_NAME, sdpa_mask)


# ---------------------------------------------------------------------------
# presses
# ---------------------------------------------------------------------------


def make_press(name: str, ratio: float):
    import kvpress as K

    if name == "full":
        return None
    table = {
        "observed_attention": lambda: K.ObservedAttentionPress(compression_ratio=ratio),
        "snapkv": lambda: K.SnapKVPress(compression_ratio=ratio),
        "tova": lambda: K.TOVAPress(compression_ratio=ratio),
        "streaming_llm": lambda: K.StreamingLLMPress(compression_ratio=ratio),
        "random": lambda: K.RandomPress(compression_ratio=ratio),  # seeded per trial via torch.manual_seed
        "knorm": lambda: K.KnormPress(compression_ratio=ratio),
        "expected_attention": lambda: K.ExpectedAttentionPress(compression_ratio=ratio),
        "keydiff": lambda: K.KeyDiffPress(compression_ratio=ratio),
        # kvpress defaults: AdaKV alpha_safeguard=0.20, ExpectedAttention epsilon=0.0
        "adakv_expected_attention": lambda: K.AdaKVPress(K.ExpectedAttentionPress(compression_ratio=ratio)),
        "adakv_expected_attention_eps0.01": lambda: K.AdaKVPress(
            K.ExpectedAttentionPress(compression_ratio=ratio, epsilon=0.01)
        ),
        "kvzip": lambda: K.KVzipPress(compression_ratio=ratio),
    }
    if name not in table:
        raise SystemExit(f"unknown press {name!r}; known: {', '.join(['full', *table])}")
    return table[name]()


def press_settings(press) -> dict:
    if press is None:
        return {}
    import dataclasses

    out = {"class": type(press).__name__}
    for f in dataclasses.fields(press):
        v = getattr(press, f.name)
        out[f.name] = press_settings(v) if dataclasses.is_dataclass(v) else v
    return {k: v for k, v in out.items() if isinstance(v, (int, float, str, bool, dict, type(None)))}


def masks_instead_of_freeing(press) -> bool:
    import kvpress as K

    return isinstance(press, (K.AdaKVPress, K.KVzipPress))


# ---------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------


class _FixedTokenizerLoader:
    """KVzipPress calls AutoTokenizer.from_pretrained(model.config.name_or_path),
    which cannot open a GGUF folder without gguf_file; hand it the loaded one."""

    def __init__(self, tok):
        self.tok = tok

    def from_pretrained(self, *args, **kwargs):
        return self.tok


def load_model(gguf: Path, dtype_name: str):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    import kvpress  # noqa: F401  (patches the stock attention functions)
    import kvpress.presses.kvzip_press as kvzip_mod

    register_attention()
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype_name]
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=dtype, attn_implementation=ATTN_NAME
    )
    model.eval()
    kvzip_mod.AutoTokenizer = _FixedTokenizerLoader(tok)
    return model, tok


USER_TURN = [1, 4093, 198]  # "<|im_start|>", "user", "\n"


def user_content_start(doc_ids: list[int]) -> int | None:
    """Where the document's user turn begins its content: the first user header
    (a sample's ids may end with the next turn's header, which is no prefix)."""
    for i in range(len(doc_ids) - len(USER_TURN) + 1):
        if doc_ids[i : i + len(USER_TURN)] == USER_TURN:
            return i + len(USER_TURN)
    return None


def run_trial(model, tok, press, sample: dict, seed: int) -> dict:
    import kvpress as K
    import torch
    from transformers import DynamicCache

    doc = torch.tensor([sample["doc_ids"]])
    question = torch.tensor([sample["question_ids"]])
    context_length = doc.shape[1]
    eos = model.generation_config.eos_token_id
    stop = set(eos if isinstance(eos, list) else [eos])
    torch.manual_seed(seed)
    _AttnState.need_weights = isinstance(press, K.ObservedAttentionPress)
    cache = DynamicCache()
    info: dict = {}
    c0 = time.process_time()
    t0 = time.perf_counter()
    with torch.no_grad():
        if press is None:
            model.model(input_ids=doc, past_key_values=cache)
        else:
            with press(model):
                if isinstance(press, K.KVzipPress):
                    # kvpress derives the system+user-turn prefix from the default chat
                    # template; take it from the sample instead (same value for
                    # samples rendered with the default system prompt).
                    info["kvzip_prefix_kvpress"] = press.prefix_length
                    start = user_content_start(sample["doc_ids"])
                    if start is not None:
                        press.prefix_length = start
                    info["kvzip_prefix_used"] = press.prefix_length
                model.model(input_ids=doc, past_key_values=cache)
        _AttnState.need_weights = False
        t1 = time.perf_counter()
        stored = [cache.get_seq_length(i) for i in range(len(cache))]
        total = len(stored) * context_length
        if masks_instead_of_freeing(press):
            masked = 0
            for layer in model.model.layers:
                mk = getattr(layer.self_attn, "masked_key_indices", None)
                if mk is not None:
                    masked += len(mk[2])
            kept = (sum(stored) * model.config.num_key_value_heads - masked) / (total * model.config.num_key_value_heads)
        else:
            kept = sum(stored) / total
        info["kv_kept_fraction"] = kept
        info["kv_stored_fraction"] = sum(stored) / total

        # kvpress generate_answer, on ids
        position_ids = torch.arange(context_length, context_length + question.shape[1]).unsqueeze(0)
        out = model(input_ids=question, past_key_values=cache, position_ids=position_ids, logits_to_keep=1)
        position_ids = position_ids[:, -1:] + 1
        gen = [out.logits[0, -1].argmax()]
        for i in range(sample["max_new_tokens"] - 1):
            if gen[-1].item() in stop:
                break
            out = model(input_ids=gen[-1].view(1, 1), past_key_values=cache, position_ids=position_ids + i)
            gen.append(out.logits[0, -1].argmax())
        t2 = time.perf_counter()
    c2 = time.process_time()
    ids = [int(x) for x in gen]
    text = tok.decode(ids, skip_special_tokens=True)
    return {
        "prediction": text,
        "generated_ids": ids,
        "prefill_s": t1 - t0,
        "decode_s": t2 - t1,
        "cpu_s": c2 - c0,
        **info,
    }


def run_pipeline_check(model, tok, press, sample: dict, seed: int) -> str:
    import kvpress as K
    import torch

    pipe = K.KVPressTextGenerationPipeline(model=model, tokenizer=tok)
    torch.manual_seed(seed)
    _AttnState.need_weights = isinstance(press, K.ObservedAttentionPress)
    try:
        with torch.no_grad():
            answers = pipe._forward(
                {"context_ids": torch.tensor([sample["doc_ids"]]), "questions_ids": [torch.tensor([sample["question_ids"]])]},
                max_new_tokens=sample["max_new_tokens"],
                press=press,
            )
    finally:
        _AttnState.need_weights = False
    return answers[0]


# ---------------------------------------------------------------------------
# demo samples
# ---------------------------------------------------------------------------

ANIMALS = ["falcon", "otter", "lynx", "heron", "badger", "gecko", "walrus", "marten", "ibis", "tapir",
           "bison", "koala", "egret", "okapi", "panda", "viper"]


def make_demo(path: Path, n: int, doc_tokens: int, gguf: Path, max_new_tokens: int) -> None:
    import random

    from jinja2 import Template

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import reference_logits as R
    import pydoc_data.topics as T

    meta = R.read_gguf_tokenizer(gguf)
    spec = R.build_spec_tokenizer(meta)
    template = Template(meta["chat_template"])
    prose = [p.strip() for v in T.topics.values() for p in v.split("\n\n")]
    prose = [" ".join(p.split()) for p in prose if len(p) > 200 and p[0].isalpha() and not p.startswith(("*", "|"))]
    rng = random.Random(1234)
    rng.shuffle(prose)
    with open(path, "w", encoding="utf-8") as f:
        pos = 0
        for k in range(n):
            animal = ANIMALS[k % len(ANIMALS)]
            number = str(rng.randint(10000, 99999))
            needle = f"The special magic number for {animal} is {number}."
            depth = round(k / max(1, n - 1), 3)
            paras = []
            while len(spec.encode("\n\n".join(paras)).ids) < doc_tokens:
                paras.append(prose[pos % len(prose)])
                pos += 1
            # insert the needle between paragraphs at the requested depth
            at = round(depth * len(paras))
            paras.insert(at, needle)
            doc = "\n\n".join(paras)
            question = f"What is the special magic number for {animal}?"
            doc_msgs = [{"role": "user", "content": doc}]
            all_msgs = doc_msgs + [{"role": "user", "content": question}]
            doc_text = template.render(messages=doc_msgs, add_generation_prompt=False)
            full_text = template.render(messages=all_msgs, add_generation_prompt=True)
            doc_ids = spec.encode(doc_text).ids
            full_ids = spec.encode(full_text).ids
            assert full_ids[: len(doc_ids)] == doc_ids
            sample = {
                "id": f"demo-{k:02d}-{animal}",
                "task": "niah_single",
                "depth": depth,
                "context_tokens": len(full_ids),
                "doc_ids": doc_ids,
                "question_ids": full_ids[len(doc_ids) :],
                "answers": [number],
                "max_new_tokens": max_new_tokens,
            }
            f.write(json.dumps(sample) + "\n")
    print(f"wrote {n} demo samples to {path}", file=sys.stderr)


# ---------------------------------------------------------------------------


def versions() -> dict:
    from importlib.metadata import version

    out = {"python": platform.python_version()}
    for p in ("torch", "transformers", "kvpress", "gguf", "numpy"):
        try:
            out[p] = version(p)
        except Exception:
            out[p] = None
    return out


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("samples", nargs="?", type=Path, help="JSONL samples file")
    ap.add_argument("--gguf", type=Path, default=DEFAULT_GGUF)
    ap.add_argument("--presses", default=",".join(DEFAULT_PRESSES),
                    help=f"comma list; default all of: {','.join(DEFAULT_PRESSES)}; extra: {','.join(EXTRA_PRESSES)}")
    ap.add_argument("--ratios", default=",".join(map(str, DEFAULT_RATIOS)), help="compression ratios (fraction removed)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N samples")
    ap.add_argument("--out", type=Path, default=None, help="cells JSONL (default: stdout)")
    ap.add_argument("--details", type=Path, default=None, help="per-sample predictions JSONL")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--check-pipeline", action="store_true",
                    help="also run kvpress's own pipeline on each cell's first sample and require the same text")
    ap.add_argument("--make-demo", type=Path, default=None, help="write a demo samples file and exit")
    ap.add_argument("--demo-n", type=int, default=10)
    ap.add_argument("--demo-tokens", type=int, default=1000, help="approximate document tokens per demo sample")
    ap.add_argument("--demo-max-new-tokens", type=int, default=16)
    args = ap.parse_args()

    if args.make_demo:
        make_demo(args.make_demo, args.demo_n, args.demo_tokens, args.gguf, args.demo_max_new_tokens)
        return
    if args.samples is None:
        ap.error("a samples file is required (or --make-demo)")

    import torch

    torch.set_num_threads(args.threads)
    samples = [json.loads(line) for line in open(args.samples, encoding="utf-8") if line.strip()]
    if args.limit:
        samples = samples[: args.limit]
    presses = [p.strip() for p in args.presses.split(",") if p.strip()]
    ratios = [float(r) for r in args.ratios.split(",") if r.strip()]
    for p in presses:  # fail early on a bad name
        make_press(p, ratios[0] if ratios else 0.5)

    t_load = time.perf_counter()
    model, tok = load_model(args.gguf, args.dtype)
    t_load = time.perf_counter() - t_load

    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    details = open(args.details, "w", encoding="utf-8") if args.details else None
    header = {
        "header": True,
        "versions": versions(),
        "machine": machine(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "dtype": args.dtype,
        "attention": f"{ATTN_NAME}: SDPA, eager float32 with weights during prefill for ObservedAttentionPress; "
        "wrapped in kvpress attention_patch",
        "model": str(args.gguf.name),
        "samples_file": str(args.samples),
        "n_samples": len(samples),
        "mean_context_tokens": sum(s["context_tokens"] for s in samples) / max(1, len(samples)),
        "presses": presses,
        "ratios": ratios,
        "ratio_meaning": "kvpress compression_ratio: fraction of the document's KV pairs removed",
        "score": "fraction of answers found as whole [A-Za-z0-9]+ word runs of the lowercased prediction",
        "model_load_s": round(t_load, 2),
        "loadavg_1m_at_start": os.getloadavg()[0],
        "timing_note": "wall seconds on a possibly shared CPU: see sec_per_trial_min/median and cpu_s_per_trial "
        "(process CPU seconds, all threads)",
    }
    print(json.dumps(header), file=out, flush=True)

    cells = []
    for pname in presses:
        for ratio in [0.0] if pname == "full" else ratios:
            press = make_press(pname, ratio)
            trials, correct, secs, pre, dec, kept, cpu = 0, 0.0, [], [], [], [], []
            checked = None
            for j, s in enumerate(samples):
                seed = 1000 + j
                r = run_trial(model, tok, press, s, seed)
                sc = score_prediction(r["prediction"], s["answers"])
                trials += 1
                correct += sc
                secs.append(r["prefill_s"] + r["decode_s"])
                pre.append(r["prefill_s"])
                dec.append(r["decode_s"])
                kept.append(r["kv_kept_fraction"])
                cpu.append(r["cpu_s"])
                if args.check_pipeline and j == 0:
                    p_text = run_pipeline_check(model, tok, make_press(pname, ratio), s, seed)
                    checked = p_text == r["prediction"]
                    if not checked:
                        raise SystemExit(f"pipeline check failed for {pname}@{ratio}: {p_text!r} != {r['prediction']!r}")
                if details:
                    details.write(json.dumps({
                        "press": pname, "ratio": ratio, "id": s["id"], "task": s.get("task"),
                        "depth": s.get("depth"), "context_tokens": s.get("context_tokens"),
                        "answers": s["answers"], "score": sc, **r,
                    }) + "\n")
                    details.flush()
            lo, hi = wilson(correct, trials)
            cell = {
                "press": pname,
                "ratio": ratio,
                "trials": trials,
                "correct": correct,
                "accuracy": correct / trials if trials else 0.0,
                "wilson95": [round(lo, 4), round(hi, 4)],
                "sec_per_trial": sum(secs) / trials,
                "sec_per_trial_median": statistics.median(secs),
                "sec_per_trial_min": min(secs),
                "cpu_s_per_trial": sum(cpu) / trials,
                "prefill_s_mean": sum(pre) / trials,
                "decode_s_mean": sum(dec) / trials,
                "kv_kept_fraction": sum(kept) / trials,
                "frees_memory": press is None or not masks_instead_of_freeing(press),
                "press_settings": press_settings(press),
                "loadavg_1m_after": os.getloadavg()[0],
            }
            if checked is not None:
                cell["pipeline_check"] = checked
            cells.append(cell)
            print(json.dumps(cell), file=out, flush=True)
            print(f"  {pname:36s} {ratio:5.3f}  acc {cell['accuracy']:.3f} [{lo:.2f},{hi:.2f}]  "
                  f"{cell['sec_per_trial']:.2f} s/trial (median {cell['sec_per_trial_median']:.2f}, "
                  f"min {cell['sec_per_trial_min']:.2f}, cpu {cell['cpu_s_per_trial']:.2f})", file=sys.stderr, flush=True)

    # summary table
    cols = sorted({c["ratio"] for c in cells if c["press"] != "full"})
    print(f"\nretention referee: {len(samples)} samples, mean {header['mean_context_tokens']:.0f} tokens, "
          f"{args.dtype}, {torch.get_num_threads()} threads (accuracy [95% Wilson]; ratio = fraction removed)",
          file=sys.stderr)
    print(f"{'press':36s}" + "".join(f"{r:>20.3f}" for r in cols) + f"{'med s/tr':>10s}", file=sys.stderr)
    for pname in presses:
        row = [c for c in cells if c["press"] == pname]
        if pname == "full":
            c = row[0]
            txt = f"{c['accuracy']:.2f} [{c['wilson95'][0]:.2f},{c['wilson95'][1]:.2f}]"
            print(f"{pname:36s}" + "".join(f"{txt:>20s}" for _ in cols or [0]) + f"{c['sec_per_trial_median']:>10.2f}",
                  file=sys.stderr)
            continue
        by = {c["ratio"]: c for c in row}
        cells_txt = []
        for r in cols:
            c = by.get(r)
            cells_txt.append(f"{c['accuracy']:.2f} [{c['wilson95'][0]:.2f},{c['wilson95'][1]:.2f}]" if c else "-")
        mean_s = statistics.median(c["sec_per_trial_median"] for c in row)
        print(f"{pname:36s}" + "".join(f"{t:>20s}" for t in cells_txt) + f"{mean_s:>10.2f}", file=sys.stderr)
    if details:
        details.close()
    if args.out:
        out.close()


if __name__ == "__main__":
    main()
