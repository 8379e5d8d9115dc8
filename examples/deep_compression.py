"""Deep Compression (Han et al., 2016) on Fashion-MNIST with sparsekit's formats and kernels.

    apt-get install -y dataset-fashion-mnist     # the data (offline, Debian package)
    python examples/deep_compression.py          # about 10 minutes on 2 cores
    python examples/deep_compression.py --quick  # scikit-learn digits, tiny epochs: a smoke run

The recipe, one stage after another, each fine-tuned before the next (``--distill``: the
fine-tuning also learns from the fp32 model's soft targets, ``sparsekit.distill``):

1. train the fp32 CNN (conv 5x5 32 -> conv 5x5 64 -> fc 1024 -> fc 10);
2. neuron / channel pruning (``sparsekit.iterative_prune_channels``): the least active channels
   and neurons go, with their inputs in the next layer: a smaller *dense* model, faster with
   any kernel;
3. weight pruning: the smallest weights of the fully connected layers are zeroed on a gradual
   schedule (``torch.nn.utils.prune`` keeps them zero while fine-tuning). The tensors stay dense,
   so this stage saves nothing on disk or in time by itself (the table shows it);
4. weight sharing: the hidden fully connected layer (the classifier too with ``--head-bits``)
   becomes a ``CodebookLinear`` (k-means centroids, the pruned zeros on a centroid held at 0.0);
   fine-tuning trains the centroids. Inference runs sparsekit's codebook kernel (int8 option)
   on the packed indices;
5. Huffman coding: ``sparsekit.save_compressed`` codes the indices (runs of indices as one
   symbol where that is shorter: the zeros of a pruned layer cost about a bit or less each).

The convolutions keep fp32 weights: after channel pruning they hold under 2% of the weights.

Prints a table per stage (top-1, bytes on disk, compression ratio, batch-1 / batch-64 latency
against the fp32 model, measured in the same run, every model in its faster memory format) and
writes it with a figure to ``--out``.
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Data, accuracy, example_parser, log, paired_latency, parse_example, train, write_table  # noqa: E402

import sparsekit  # noqa: E402
from sparsekit.nn import CodebookLinear  # noqa: E402
from sparsekit.pruning import magnitude_mask, sparsity_schedule  # noqa: E402


def build_cnn(c1: int = 32, c2: int = 64, hidden: int = 1024, classes: int = 10) -> nn.Sequential:
    """The classic small MNIST CNN: two 5x5 conv + max-pool blocks, a 1024-wide hidden layer."""
    return nn.Sequential(
        nn.Conv2d(1, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c2 * 7 * 7, hidden), nn.ReLU(), nn.Dropout(0.3), nn.Linear(hidden, classes))


def file_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.pt")
        torch.save(model.state_dict(), path)
        return os.path.getsize(path)


def linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def prune_weights(model: nn.Module, data: Data, sparsity: dict[str, float], steps: int, epochs: int,
                  lr: float, **tune) -> None:
    """Gradual magnitude pruning of the named layers to ``sparsity`` (cubic schedule), fine-tuning
    with the masks in place after every step; the zeros are made permanent at the end."""
    schedules = {n: sparsity_schedule(s, steps) for n, s in sparsity.items()}
    for step in range(steps):
        for name, sched in schedules.items():
            layer = model.get_submodule(name)
            if prune.is_pruned(layer):
                prune.remove(layer, "weight")  # the zeros so far stay; the new mask covers them
            prune.custom_from_mask(layer, "weight", magnitude_mask(layer.weight, sched[step]))
        log(f"  weight pruning step {step + 1}/{steps}: "
            + ", ".join(f"{n} {s[step]:.0%}" for n, s in schedules.items()))
        train(model, data, epochs, lr=lr, seed=100 + step, label=f"prune {step + 1}", **tune)
    for name in sparsity:
        prune.remove(model.get_submodule(name), "weight")


def cluster(model: nn.Module, bits: dict[str, int]) -> None:
    """Each named Linear -> CodebookLinear (``bits``), its zeros on a centroid held at 0."""
    for name, b in bits.items():
        sparsekit.convert(model, sparsekit.CodebookConfig(bits=b, keep_zeros=True), lambda _, n: n == name)


def set_compute(model: nn.Module, compute: str) -> None:
    for m in model.modules():
        if isinstance(m, CodebookLinear):
            m.compute = compute


def main(argv=None) -> list[dict]:
    p = example_parser(__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=12,
                   help="training epochs of the fp32 model (the learning rate decays: trained to its plateau, so "
                        "that the fine-tuning of the later stages is not what makes them accurate)")
    p.add_argument("--finetune-epochs", type=int, default=1, help="fine-tuning epochs after each pruning step")
    p.add_argument("--conv-amount", default="0.75,0.5",
                   help="fraction of each conv's channels removed, in order (the first conv, on one input channel, "
                        "costs the same at any width, so it gives up more)")
    p.add_argument("--fc-amount", type=float, default=0.75, help="fraction of the hidden layer's neurons removed")
    p.add_argument("--fc-sparsity", type=float, default=0.6, help="weights zeroed in the hidden Linear")
    p.add_argument("--head-sparsity", type=float, default=0.5, help="weights zeroed in the classifier")
    p.add_argument("--fc-bits", type=int, default=4, help="codebook bits of the hidden Linear")
    p.add_argument("--head-bits", type=int, default=0,
                   help="codebook bits of the classifier; 0 keeps it a pruned dense Linear (256 x 10: a codebook "
                        "call costs more than the product there, and its 10 KB hardly count on disk)")
    p.add_argument("--recover-epochs", type=int, default=10, help="fine-tuning epochs after the last channel step")
    p.add_argument("--centroid-epochs", type=int, default=2, help="fine-tuning epochs of the centroids")
    p.add_argument("--prune-lr", type=float, default=2.5e-4, help="learning rate of the weight-pruning fine-tuning")
    p.add_argument("--centroid-lr", type=float, default=1e-4, help="learning rate of the centroid fine-tuning")
    p.add_argument("--distill", action="store_true", help="fine-tune on the fp32 model's soft targets too")
    p.add_argument("--reuse", action="store_true", help="load the fp32 model trained by an earlier run")
    p.add_argument("--seed", type=int, default=0)
    args, data, out = parse_example(p, argv, dict(epochs=2, finetune_epochs=1, recover_epochs=1, centroid_epochs=1))
    torch.manual_seed(args.seed)
    log(f"{data.name}: {len(data.x_train)} training, {len(data.x_test)} test images; "
        f"{torch.get_num_threads()} threads")
    t_start = time.perf_counter()

    fp32 = build_cnn()
    checkpoint = out / f"fp32_{data.name}_e{args.epochs}_s{args.seed}.pt"
    if args.reuse and checkpoint.exists():
        log(f"stage 1: the fp32 model from {checkpoint}")
        fp32.load_state_dict(torch.load(checkpoint, weights_only=True))
    else:
        log("stage 1: train the fp32 model")
        train(fp32, data, args.epochs, lr=1e-3, seed=args.seed, label="fp32", decay=0.85)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(fp32.state_dict(), checkpoint)
    fp32.eval()
    # with --distill every fine-tuning below also learns from the fp32 model's outputs
    tune = dict(teacher=fp32 if args.distill else None)
    models = {"fp32": fp32}
    bytes_on_disk = {"fp32": file_bytes(fp32)}

    m = copy.deepcopy(fp32)
    chains, _ = sparsekit.channel_pruning.find_prunable_chains(m)
    conv_amounts = iter(float(a) for a in args.conv_amount.split(","))
    amounts = {c.producer: next(conv_amounts) if isinstance(m.get_submodule(c.producer), nn.Conv2d) else args.fc_amount
               for c in chains}
    log(f"stage 2: neuron / channel pruning ({amounts}: fraction removed per producer)")
    sparsekit.iterative_prune_channels(
        m, amounts, lambda mod, step, s: train(mod, data, args.finetune_epochs, lr=5e-4, seed=10 + step,
                                               label=f"channels {step + 1}", **tune),
        steps=3, importance="activation", calibration=data.x_train[:2048], multiple_of=8,
        progress=lambda done, total, what: log(f"  channel pruning step {done}/{total}: {what}"))
    log(f"  {m}")
    train(m, data, args.recover_epochs, lr=5e-4, seed=20, label="recover", decay=0.75, **tune)
    m.eval()
    models["channels"] = m
    bytes_on_disk["channels"] = file_bytes(m)

    fc = linear_names(m)
    log(f"stage 3: weight pruning of {fc}")
    m = copy.deepcopy(m)
    prune_weights(m, data, {fc[0]: args.fc_sparsity, fc[-1]: args.head_sparsity}, steps=3,
                  epochs=args.finetune_epochs, lr=args.prune_lr, **tune)
    m.eval()
    models["weights"] = m
    bytes_on_disk["weights"] = file_bytes(m)

    bits = {fc[0]: args.fc_bits, fc[-1]: args.head_bits} if args.head_bits else {fc[0]: args.fc_bits}
    log(f"stage 4: weight sharing ({bits}: codebook bits per layer), centroids fine-tuned")
    m = copy.deepcopy(m)
    cluster(m, bits)
    log(f"  clustered: test top-1 {accuracy(m, data):.2%} before fine-tuning")
    train(m, data, args.centroid_epochs, lr=args.centroid_lr, seed=200, label="centroids", decay=0.5, **tune)
    m.eval()
    exact_acc = accuracy(m, data)
    set_compute(m, "int8")  # the deployed kernel: int8 products of the 2-bit codes (error bound documented)
    models["codebook"] = m
    bytes_on_disk["codebook"] = file_bytes(m)

    log("stage 5: Huffman coding (sparsekit.save_compressed)")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "deep_compression.spk"
    report = sparsekit.save_compressed(m, path)
    bytes_on_disk["huffman"] = report.file_bytes
    reloaded = copy.deepcopy(m)
    for t in reloaded.state_dict().values():
        t.zero_()
    sparsekit.load_compressed(path, model=reloaded)
    with torch.no_grad():
        sample = data.x_test[:256]
        if not torch.equal(reloaded(sample), m(sample)):
            raise RuntimeError("the Huffman-coded file does not give back the same model")
    models["huffman"] = reloaded

    log("measuring latency (interleaved rounds, medians)")
    x1, x64 = data.x_test[:1].contiguous(), data.x_test[:64].contiguous()
    lat1, lat64 = paired_latency(models, x1), paired_latency(models, x64)
    names = {"fp32": "fp32 baseline", "channels": "+ neuron/channel pruning",
             "weights": "+ weight pruning (zeros in dense tensors)", "codebook": "+ weight sharing (codebook kernel)",
             "huffman": "+ Huffman coding (file)"}
    rows = []
    for k, model in models.items():
        acc = accuracy(model, data)
        rows.append({"stage": names[k], "top1": acc, "delta": acc - rows[0]["top1"] if rows else 0.0,
                     "params": sum(t.numel() for t in model.state_dict().values()),
                     "bytes": bytes_on_disk[k], "ratio": bytes_on_disk["fp32"] / bytes_on_disk[k],
                     "b1_ms": lat1[k][0], "b1_x": lat1["fp32"][0] / lat1[k][0], "b1_layout": lat1[k][1],
                     "b64_ms": lat64[k][0], "b64_x": lat64["fp32"][0] / lat64[k][0], "b64_layout": lat64[k][1]})
    rows[3]["note"] = rows[4]["note"] = f"exact compute {exact_acc:.2%}"
    cols = [("stage", "stage", str), ("top1", "top-1", lambda v: f"{v:.2%}"),
            ("delta", "vs fp32", lambda v: f"{100 * v:+.2f} pt"), ("bytes", "bytes on disk", lambda v: f"{v:,}"),
            ("ratio", "smaller", lambda v: f"{v:.1f}x"), ("b1_ms", "batch 1 ms", lambda v: f"{v:.3f}"),
            ("b1_x", "speed-up", lambda v: f"{v:.2f}x"), ("b64_ms", "batch 64 ms", lambda v: f"{v:.2f}"),
            ("b64_x", "speed-up", lambda v: f"{v:.2f}x"), ("b1_layout", "faster layout b1 / b64", str)]
    for r in rows:
        r["b1_layout"] = f"{r['b1_layout']} / {r['b64_layout']}"
    title = (f"Deep Compression on {data.name} ({torch.get_num_threads()} threads, "
             f"{time.perf_counter() - t_start:.0f} s in all)")
    write_table(rows, cols, out / "deep_compression.md", title)
    print(report)
    figure(rows, out / "deep_compression.png")
    return rows


def figure(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed: no figure")
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot([r["ratio"] for r in rows], [100 * r["top1"] for r in rows], "o-")
    for i, r in enumerate(rows):
        a.annotate(str(i + 1), (r["ratio"], 100 * r["top1"]), textcoords="offset points", xytext=(4, 4))
    a.set_xscale("log")
    a.set_xlabel("compression ratio vs fp32 file (log)")
    a.set_ylabel("top-1 (%)")
    a.set_title("accuracy vs compression (1 = fp32)")
    idx = range(len(rows))
    a.grid(True, alpha=0.3)
    b.bar([i - 0.2 for i in idx], [r["b1_x"] for r in rows], 0.4, label="batch 1")
    b.bar([i + 0.2 for i in idx], [r["b64_x"] for r in rows], 0.4, label="batch 64")
    b.axhline(1.0, color="gray", lw=0.8)
    b.set_xticks(list(idx), [str(i + 1) for i in idx])
    b.set_xlabel("stage")
    b.set_ylabel("speed-up vs fp32 (x)")
    b.set_title("latency per stage")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    log(f"figure: {path}")


if __name__ == "__main__":
    main()
