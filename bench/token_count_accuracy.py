"""How close lynkr's count_tokens lands once calibrated (issue 16), measured in-process.

For each seeded corpus of the test suite (test_lynkr.tc_corpus: Claude Code-like requests with short
and long chats, tool loops over real code and JSON, images, CJK), the truth is Claude's published BPE
(test_lynkr.tc_truth: the tokenizer.json `python test_lynkr.py` fetches). lynkr's TokenCalibration
learns from the first 10 requests; the other 20 are counted and compared. Also prints the raw
estimate's speed on a 200 KB and a 2 MB request.

    python bench/token_count_accuracy.py [--seeds 3,5,7,11,13,17,19,23]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import lynkr
import test_lynkr as tl


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="3,5,7,11,13,17,19,23")
    args = parser.parse_args()
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tl.CLAUDE_TOKENIZER))
    print(f"{'seed':>4} {'raw min':>8} {'raw max':>8} {'cal min':>8} {'cal max':>8}  within -2 %/+5 %")
    for seed in (int(s) for s in args.seeds.split(",")):
        rows = []
        for _kind, body in tl.tc_corpus(seed, 30):
            body = lynkr.fold_system_messages(body)
            rows.append((lynkr.raw_token_estimate(body), tl.tc_truth(tok, body)))
        calibration = lynkr.TokenCalibration()
        for estimate, truth in rows[:10]:
            calibration = calibration.learned(estimate, truth)
        raw = [e / t for e, t in rows]
        cal = [calibration.count(e) / t for e, t in rows[10:]]
        ok = min(cal) >= 0.98 and max(cal) <= 1.05
        print(
            f"{seed:>4} {min(raw):8.4f} {max(raw):8.4f} {min(cal):8.4f} {max(cal):8.4f}  {'yes' if ok else 'NO'}"
        )
    _docs, sources = tl.tc_stdlib_texts()
    for size in (200_000, 2_000_000):
        text, n = [], 0
        while n < size:
            part = sources[len(text) % len(sources)]
            text.append(part)
            n += len(part)
        body = {"messages": [{"role": "user", "content": "".join(text)[:size]}]}
        runs = 20 if size < 1_000_000 else 5
        t0 = time.perf_counter()
        for _ in range(runs):
            lynkr.raw_token_estimate(body)
        print(
            f"raw_token_estimate, {size // 1000} KB of code: {(time.perf_counter() - t0) / runs * 1000:.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
