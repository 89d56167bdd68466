"""GPU embedding throughput of a checkpoint: seconds of audio embedded per second.

Random-noise fragments (throughput does not depend on content), batches of several sizes,
fp32 and bf16 autocast, CUDA-synchronised timing, median of repeats. Prints JSON.

    python bench/bench_gpu.py --model accurate      # or fast, or a checkpoint path
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from speakerid.audio import FRAGMENT_SECONDS
from speakerid.embedding.backends.torch import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="accurate", help="accurate | fast | checkpoint path")
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024, 4096])
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device")
    enc = load_model(args.model).encoder.cuda().eval()
    rows = []
    for batch in args.batches:
        x = torch.randn(batch, enc.config.fragment_samples, device="cuda") * 0.1
        for dtype in ("fp32", "bf16"):
            with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, dtype == "bf16"):
                for _ in range(3):
                    enc(x)
                torch.cuda.synchronize()
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    enc(x)
                    torch.cuda.synchronize()
                    times.append(time.perf_counter() - t0)
            sec = statistics.median(times)
            rows.append(
                {
                    "batch": batch,
                    "dtype": dtype,
                    "median_s": round(sec, 5),
                    "audio_s_per_s": round(batch * FRAGMENT_SECONDS / sec),
                    "peak_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20),
                }
            )
    print(
        json.dumps(
            {
                "device": torch.cuda.get_device_name(),
                "torch": torch.__version__,
                "model": args.model,
                "rows": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
