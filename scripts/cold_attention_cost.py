"""What one decode step's attention costs over a quantized cold tier, three ways.

    python scripts/cold_attention_cost.py [--bits 4] [--repeats 50]

The heap dequantizes its cold tier into temporaries before attention
(`HeapKVCache._full_kv`); mlx-lm's QuantizedKVCache multiplies the packed
rows directly (`mx.quantized_matmul`). This times both against plain fp32
attention for one query token per KV-head group, at the head shapes of the
bundled model (2 KV heads x 32), Llama-3.2-1B (8 x 64) and Llama-3-8B
(8 x 128), so the choice between them rests on numbers from this machine.
"""

from __future__ import annotations

import argparse
import time

import mlx.core as mx

SHAPES = {"bundled": (2, 3, 32), "llama-3.2-1b": (8, 4, 64), "llama-3-8b": (8, 4, 128)}  # KV heads, group, head_dim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, default=4, choices=(4, 8))
    parser.add_argument("--tokens", default="1024,8192")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    print(f"{'shape':<14} {'tokens':>7} {'fp32 ms':>8} {'dequantize ms':>14} {'quantized_matmul ms':>20}")
    for name, (H, G, D) in SHAPES.items():
        group = 64 if D % 64 == 0 else 32
        for n in (int(t) for t in args.tokens.split(",")):
            k, v = mx.random.normal((1, H, n, D)), mx.random.normal((1, H, n, D))
            q = mx.random.normal((1, H, G, D))
            qk = mx.quantize(k, group_size=group, bits=args.bits)
            qv = mx.quantize(v, group_size=group, bits=args.bits)
            mx.eval(k, v, q, qk, qv)

            def fp32():
                return mx.softmax(q @ k.swapaxes(-1, -2), axis=-1) @ v

            def dequantize():
                kk = mx.dequantize(*qk, group_size=group, bits=args.bits)
                vv = mx.dequantize(*qv, group_size=group, bits=args.bits)
                return mx.softmax(q @ kk.swapaxes(-1, -2), axis=-1) @ vv

            def packed():
                s = mx.quantized_matmul(q, *qk, transpose=True, group_size=group, bits=args.bits)
                return mx.quantized_matmul(mx.softmax(s, axis=-1), *qv, transpose=False, group_size=group, bits=args.bits)

            times = []
            for fn in (fp32, dequantize, packed):
                mx.eval(fn())
                start = time.perf_counter()
                for _ in range(args.repeats):
                    mx.eval(fn())
                times.append(1e3 * (time.perf_counter() - start) / args.repeats)
            print(f"{name:<14} {n:>7} {times[0]:>8.2f} {times[1]:>14.2f} {times[2]:>20.2f}")


if __name__ == "__main__":
    main()
