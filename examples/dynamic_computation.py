"""Dynamic computation on Fashion-MNIST: the network spends less on easy inputs.

    apt-get install -y dataset-fashion-mnist
    python examples/dynamic_computation.py           # about 15 minutes on 2 cores
    python examples/dynamic_computation.py --quick   # scikit-learn digits, tiny epochs

1. Dynamic depth: the CNN of ``deep_compression.py`` with exit heads after its two conv blocks
   (``sparsekit.nn.EarlyExitNetwork``), trained on the sum of the exit losses. The confidence
   threshold is the lowest that keeps top-1 within a quarter point of the full network on a
   validation split of the training set (``calibrate_threshold``); on the test set the table
   gives top-1, the average depth and the batch-1 latency per image against the full network.
2. Dynamic width: a slimmable CNN (shared weights, one BatchNorm per width) trained at all its
   widths at once (``train_slimmable_step``); top-1 and latency at each width, chosen at run
   time with ``set_width``.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Batches, Data, accuracy, example_parser, latency_ms, log, parse_example, write_table  # noqa: E402
from deep_compression import build_cnn  # noqa: E402

from sparsekit.dynamic import calibrate_threshold, early_exit_loss, set_width, train_slimmable_step  # noqa: E402
from sparsekit.nn import EarlyExitNetwork, SlimmableConv2d, SlimmableLinear, SwitchableBatchNorm2d  # noqa: E402
from sparsekit.timing import median_time  # noqa: E402


def build_early_exit(threshold: float = 0.9) -> EarlyExitNetwork:
    """Exits after the first conv block (32 x 14 x 14) and the second (64 x 7 x 7): a linear
    classifier each, on max-pooled / flattened features; the last exit is the CNN's own output."""
    heads = {2: nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 49, 10)),
             5: nn.Sequential(nn.Flatten(), nn.Linear(64 * 49, 10))}
    return EarlyExitNetwork.from_sequential(build_cnn(), heads, threshold=threshold)


def train_early_exit(model: EarlyExitNetwork, data: Data, x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = Batches(x, y, 128, 0, "early exit")
    torch.manual_seed(0)
    for e in range(epochs):
        model.train()
        t0, total, n = time.perf_counter(), 0.0, 0
        for xb, yb in batches:
            opt.zero_grad()
            loss = early_exit_loss(model(xb), yb)
            loss.backward()
            opt.step()
            total, n = total + loss.item() * len(yb), n + len(yb)
        model.threshold = math.inf
        log(f"  early exit epoch {e + 1}/{epochs}: summed exit loss {total / n:.4f}, full-depth test top-1 "
            f"{accuracy(model, data):.2%} ({time.perf_counter() - t0:.0f} s)")


def per_image_ms(model: nn.Module, x: torch.Tensor) -> float:
    """Mean batch-1 latency over the images of ``x`` (each run alone: early exits differ per image)."""
    model.eval()
    with torch.no_grad():
        for i in range(min(20, len(x))):  # warm-up on a few images, not a whole pass
            model(x[i:i + 1])

        def one_pass():
            for i in range(len(x)):
                model(x[i:i + 1])

        return 1e3 * median_time(one_pass, warmup=0, min_reps=1, min_time=0) / len(x)


def build_slimmable(widths=(0.25, 0.5, 1.0), c1: int = 32, c2: int = 64, hidden: int = 256) -> nn.Sequential:
    w = dict(width_mults=widths)
    return nn.Sequential(
        SlimmableConv2d(1, c1, 5, padding=2, slim_in=False, **w), SwitchableBatchNorm2d(c1, **w), nn.ReLU(),
        nn.MaxPool2d(2),
        SlimmableConv2d(c1, c2, 5, padding=2, **w), SwitchableBatchNorm2d(c2, **w), nn.ReLU(), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(3), nn.Flatten(),  # 3 x 3 per channel: the slimmed channels stay contiguous
        SlimmableLinear(c2 * 9, hidden, **w), nn.ReLU(), SlimmableLinear(hidden, 10, slim_out=False, **w))


def main(argv=None) -> dict:
    p = example_parser(__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--slim-epochs", type=int, default=4)
    p.add_argument("--validation", type=int, default=5000, help="training images held out to pick the threshold")
    p.add_argument("--max-drop", type=float, default=0.0025,
                   help="top-1 the threshold may cost on the validation split (0.0025: a quarter point, half the "
                        "half-point budget, so that the choice holds on unseen data)")
    p.add_argument("--latency-images", type=int, default=1000)
    args, data, out = parse_example(p, argv, dict(epochs=2, slim_epochs=1, validation=300, latency_images=100))
    t_start = time.perf_counter()
    nv = args.validation
    x_tr, y_tr, x_val, y_val = data.x_train[:-nv], data.y_train[:-nv], data.x_train[-nv:], data.y_train[-nv:]

    log("1. dynamic depth: early exits")
    ee = build_early_exit()
    train_early_exit(ee, data, x_tr, y_tr, args.epochs)
    ee.eval()
    threshold, stats = calibrate_threshold(ee, (x_val, y_val), max_accuracy_drop=args.max_drop)
    for s in stats:
        log(f"   validation: threshold {s['threshold']:.3f}: top-1 {s['accuracy']:.2%}, "
            f"average depth {s['average_depth']:.2f}")
    ee.threshold = math.inf
    full_acc = accuracy(ee, data)
    ee.threshold = threshold
    ee.reset_stats()
    early_acc = accuracy(ee, data)
    depth, fractions = ee.average_depth(), ee.exit_fractions().tolist()
    plain = nn.Sequential(*[layer for stage in ee.stages for layer in stage])  # the network without heads
    xs = data.x_test[:args.latency_images]
    timings = {"plain": [], "full": [], "early": []}
    for _ in range(3):  # interleaved rounds; the median
        timings["plain"].append(per_image_ms(plain, xs))
        ee.threshold = math.inf
        timings["full"].append(per_image_ms(ee, xs))
        ee.threshold = threshold
        timings["early"].append(per_image_ms(ee, xs))
    lat = {k: sorted(v)[1] for k, v in timings.items()}
    rows = [
        {"model": "CNN without exit heads", "top1": accuracy(plain, data), "depth": 3.0, "ms": lat["plain"],
         "x": 1.0},
        {"model": "early-exit CNN, full depth", "top1": full_acc, "depth": 3.0, "ms": lat["full"],
         "x": lat["plain"] / lat["full"]},
        {"model": f"early-exit CNN, threshold {threshold:.3f}", "top1": early_acc, "depth": depth,
         "ms": lat["early"], "x": lat["plain"] / lat["early"]},
    ]
    cols = [("model", "model", str), ("top1", "top-1", lambda v: f"{v:.2%}"),
            ("depth", "average depth (of 3 stages)", lambda v: f"{v:.2f}"),
            ("ms", "batch-1 ms per image", lambda v: f"{v:.3f}"), ("x", "speed-up", lambda v: f"{v:.2f}x")]
    _, sweep = calibrate_threshold(ee, (data.x_test, data.y_test))  # every threshold on the test set, for the record
    for r in sweep:
        rows.append({"model": f"  (test sweep) threshold {r['threshold']:.3f}", "top1": r["accuracy"],
                     "depth": r["average_depth"]})
    write_table(rows, cols, out / "early_exit.md",
                f"Early exit on {data.name}: threshold chosen on {nv} validation images; exits taken "
                f"{', '.join(f'{f:.1%}' for f in fractions)}; top-1 {100 * (early_acc - full_acc):+.2f} points "
                "vs full depth")
    result = {"full_top1": full_acc, "early_top1": early_acc, "average_depth": depth, "latency_ms": lat,
              "threshold": threshold}

    log("2. dynamic width: slimmable CNN")
    widths = (0.25, 0.5, 1.0)
    slim = build_slimmable(widths)
    opt = torch.optim.Adam(slim.parameters(), lr=1e-3)
    batches = Batches(data.x_train, data.y_train, 128, 0, "slimmable")
    torch.manual_seed(0)
    for e in range(args.slim_epochs):
        slim.train()
        t0 = time.perf_counter()
        for xb, yb in batches:
            train_slimmable_step(slim, xb, yb, opt, widths)
        accs = []
        for w in widths:
            set_width(slim, w)
            accs.append(accuracy(slim, data))
        log(f"  slimmable epoch {e + 1}/{args.slim_epochs}: test top-1 "
            + ", ".join(f"{w:g}x {a:.2%}" for w, a in zip(widths, accs)) + f" ({time.perf_counter() - t0:.0f} s)")
    slim.eval()
    x1, x64 = data.x_test[:1], data.x_test[:64]
    srows = []
    for w in reversed(widths):
        set_width(slim, w)
        srows.append({"width": w, "top1": accuracy(slim, data), "b1": latency_ms(slim, x1),
                      "b64": latency_ms(slim, x64)})
    for r in srows:
        r["b1_x"], r["b64_x"] = srows[0]["b1"] / r["b1"], srows[0]["b64"] / r["b64"]
    cols = [("width", "width", lambda v: f"{v:g}x"), ("top1", "top-1", lambda v: f"{v:.2%}"),
            ("b1", "batch 1 ms", lambda v: f"{v:.3f}"), ("b1_x", "speed-up", lambda v: f"{v:.2f}x"),
            ("b64", "batch 64 ms", lambda v: f"{v:.2f}"), ("b64_x", "speed-up", lambda v: f"{v:.2f}x")]
    write_table(srows, cols, out / "slimmable.md",
                f"Slimmable CNN on {data.name}, one set of weights ({time.perf_counter() - t_start:.0f} s in all)")
    result["slimmable"] = srows
    return result


if __name__ == "__main__":
    main()
