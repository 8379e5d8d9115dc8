"""What the examples share: data (Fashion-MNIST, or scikit-learn's digits for a quick check),
mini-batches with a progress line, training and accuracy (``sparsekit.distill``'s loops), batch-1
and batch-64 latency (medians), and the result table / figure writers."""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from sparsekit.distill import Distiller, evaluate_accuracy, train_classifier
from sparsekit.timing import median_time

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel mean and std (after / 255)


class Data(NamedTuple):
    x_train: torch.Tensor  # float32 [N, 1, 28, 28], normalised
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    name: str


def load_data(name: str = "fashion-mnist", train_limit: Optional[int] = None) -> Data:
    """``fashion-mnist`` (Debian package ``dataset-fashion-mnist``), or ``digits`` (scikit-learn's
    8 x 8 digits scaled to 28 x 28: the same models and code paths in seconds)."""
    if name == "fashion-mnist":
        from sparsekit.datasets import load_fashion_mnist

        d = load_fashion_mnist()
        xs = [((x.float() / 255 - MEAN) / STD).unsqueeze(1) for x in (d.x_train, d.x_test)]
        ys = [d.y_train, d.y_test]
    elif name == "digits":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        x = torch.tensor(X, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
        x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
        x = (x - x.mean()) / x.std()
        g = torch.Generator().manual_seed(0)
        perm = torch.randperm(len(x), generator=g)
        x, y = x[perm], torch.tensor(y)[perm]
        xs, ys = [x[:1400], x[1400:]], [y[:1400], y[1400:]]
    else:
        raise ValueError(f"unknown dataset {name!r} (fashion-mnist or digits)")
    if train_limit is not None:
        xs[0], ys[0] = xs[0][:train_limit], ys[0][:train_limit]
    return Data(xs[0].contiguous(), ys[0], xs[1].contiguous(), ys[1], name)


def example_parser(description: str) -> argparse.ArgumentParser:
    """The options every example shares: the data, a training-set limit, the output folder and
    ``--quick`` (digits, tiny epochs: a smoke run)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", default="fashion-mnist", choices=["fashion-mnist", "digits"])
    p.add_argument("--train-limit", type=int, default=None, help="use only this many training images")
    p.add_argument("--out", default="examples/results", help="where the tables, their JSON and the figures go")
    p.add_argument("--quick", action="store_true", help="scikit-learn digits, tiny epochs: checks the script runs")
    return p


def parse_example(p: argparse.ArgumentParser, argv, quick: dict) -> tuple[argparse.Namespace, Data, Path]:
    """The parsed options (with ``--quick``: the digits and the ``quick`` settings), the data and
    the output folder."""
    args = p.parse_args(argv)
    if args.quick:
        for key, value in dict(quick, data="digits").items():
            setattr(args, key, value)
    return args, load_data(args.data, args.train_limit), Path(args.out)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Batches:
    """Shuffled mini-batches of ``(x, y)``, reshuffled every pass (seeded); with ``label`` a
    progress bar on stderr while an epoch runs."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128, seed: int = 0,
                 label: Optional[str] = None):
        self.x, self.y, self.batch_size, self.label = x, y, batch_size, label
        self.gen = torch.Generator().manual_seed(seed)
        self.epoch = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perm = torch.randperm(len(self.x), generator=self.gen)
        n = (len(perm) + self.batch_size - 1) // self.batch_size
        self.epoch += 1
        start = time.perf_counter()
        for i in range(n):
            idx = perm[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.x[idx], self.y[idx]
            if self.label and sys.stderr.isatty() and (i + 1) % max(1, n // 20) == 0:
                done = (i + 1) / n
                print(f"\r  {self.label} pass {self.epoch}: [{'#' * int(20 * done):<20}] {done:4.0%} "
                      f"{time.perf_counter() - start:5.1f} s", end="", file=sys.stderr, flush=True)
        if self.label and sys.stderr.isatty():
            print("\r" + " " * 70 + "\r", end="", file=sys.stderr, flush=True)


def train(model: nn.Module, data: Data, epochs: int, lr: float = 1e-3, seed: int = 0, label: str = "train",
          batch_size: int = 128, teacher: Optional[Union[nn.Module, list[nn.Module]]] = None,
          temperature: float = 4.0, alpha: float = 0.7, decay: float = 1.0,
          label_smoothing: float = 0.0) -> list[float]:
    """Adam for ``epochs`` passes on cross-entropy (``label_smoothing`` as in
    ``torch.nn.functional.cross_entropy``), or with a ``teacher`` (one module or a list: an
    ensemble) on the distillation loss (``sparsekit.distill.Distiller``); the learning rate is
    multiplied by ``decay`` after every epoch. A line per epoch (loss, test accuracy)."""
    torch.manual_seed(seed)
    batches = Batches(data.x_train, data.y_train, batch_size, seed, label)
    distiller = Distiller(model, teacher, temperature=temperature, alpha=alpha) if teacher is not None else None
    opt = torch.optim.Adam(model.parameters() if distiller is None else distiller.parameters(), lr=lr)
    losses = []
    for e in range(epochs):
        t0 = time.perf_counter()
        if distiller is None:
            losses += train_classifier(model, batches, opt, epochs=1, progress=False, label_smoothing=label_smoothing)
        else:
            losses += distiller.fit(batches, opt, epochs=1, progress=False)
        for group in opt.param_groups:
            group["lr"] *= decay
        log(f"  {label} epoch {e + 1}/{epochs}: loss {losses[-1]:.4f}, test top-1 {accuracy(model, data):.2%} "
            f"({time.perf_counter() - t0:.0f} s)")
    return losses


def accuracy(model: nn.Module, data: Data, batch_size: int = 1000) -> float:
    return evaluate_accuracy(model, Batches(data.x_test, data.y_test, batch_size))


def latency_ms(model: nn.Module, x: torch.Tensor, min_time: float = 0.5, min_reps: int = 20) -> float:
    """Median wall time of ``model(x)`` in ms (eval mode, no grad), after warm-up."""
    model.eval()
    with torch.no_grad():
        return 1e3 * median_time(lambda: model(x), warmup=5, min_reps=min_reps, min_time=min_time)


def paired_latency(models: dict[str, nn.Module], x: torch.Tensor, rounds: int = 5) -> dict[str, tuple[float, str]]:
    """Latency of each model in its faster memory format (NCHW or channels_last for 4-D inputs),
    measured in interleaved rounds so the machine's drift hits every model alike: the median
    over rounds, and the format."""
    formats = [torch.contiguous_format] + ([torch.channels_last] if x.dim() == 4 else [])
    variants = {}
    for k, m in models.items():
        for f in formats:
            mm = m if f is torch.contiguous_format else copy.deepcopy(m).to(memory_format=f)
            variants[(k, f)] = (mm, x.contiguous(memory_format=f))
    times: dict[tuple, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for v, (mm, xx) in variants.items():
            times[v].append(latency_ms(mm, xx, min_time=0.1, min_reps=10))
    out = {}
    for k in models:
        best = min(formats, key=lambda f: statistics.median(times[(k, f)]))
        out[k] = (statistics.median(times[(k, best)]), "NCHW" if best is torch.contiguous_format else "channels_last")
    return out


def write_table(rows: list[dict], columns: list[tuple[str, str, Callable]], path: Path, title: str) -> str:
    """A markdown table of ``rows`` (``columns``: key, header, formatter) to ``path`` and stdout."""
    lines = [f"## {title}", "", "| " + " | ".join(h for _, h, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r[k]) if r.get(k) is not None else "" for k, _, fmt in columns) + " |")
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print(text)
    return text
