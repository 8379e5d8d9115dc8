"""Two more of the textbook's techniques on Fashion-MNIST.

    apt-get install -y dataset-fashion-mnist
    python examples/binary_and_distillation.py           # about 35 minutes on 2 cores
    python examples/binary_and_distillation.py --skip-binary   # distillation only
    python examples/binary_and_distillation.py --quick   # scikit-learn digits, tiny epochs

1. A binary CNN (XNOR-Net): the inner convolutions and the hidden fully connected layer keep
   one bit per weight and binarize their inputs (``BinaryConv2d`` / ``BinaryLinear``), trained
   with the clipped straight-through estimator on latent float weights; the first and last
   layers stay in float (as in XNOR-Net). After training, ``eval()`` packs the weights and the
   network runs on sparsekit's XNOR-popcount kernels.
2. Knowledge distillation: a small student CNN trained on the softened outputs of an ensemble
   of teachers (``sparsekit.distill.Distiller`` with a list of teachers: their probabilities at
   T = 4 averaged, alpha = 0.9) against the same student trained on labels alone, the same
   epochs, the same initial weights and batch order, over several seeds (mean and spread). The
   teachers are the fp32 CNN trained from different seeds with label smoothing 0.1, which
   spreads their probability over the look-alike classes (shirt / T-shirt / pullover / coat)
   instead of saturating at the label: the most informative soft targets we measured.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import accuracy, example_parser, log, paired_latency, parse_example, train, write_table  # noqa: E402
from deep_compression import build_cnn, file_bytes  # noqa: E402

from sparsekit.nn import BinaryConv2d, BinaryLinear  # noqa: E402


def build_binary_cnn(c1: int = 32, c2: int = 64, c3: int = 128, hidden: int = 256, classes: int = 10) -> nn.Sequential:
    """float conv -> BN -> [binary conv -> max-pool -> BN] x 2 -> binary fc -> BN -> float classifier.
    Each BatchNorm before a binary layer sets where its sign() splits the activations."""
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1),
        BinaryConv2d(c1, c2, 3, padding=1, trainable=True), nn.MaxPool2d(2), nn.BatchNorm2d(c2),
        BinaryConv2d(c2, c3, 3, padding=1, trainable=True), nn.MaxPool2d(2), nn.BatchNorm2d(c3),
        nn.Flatten(), BinaryLinear(c3 * 49, hidden, trainable=True), nn.BatchNorm1d(hidden),
        nn.Linear(hidden, classes))


def init_latent(model: nn.Module) -> None:
    """Latent weights start as a float layer's would (the constructor zeroes them)."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, (BinaryConv2d, BinaryLinear)) and m.latent_weight is not None:
            fan_in = m.latent_weight[0].numel()
            with torch.no_grad():
                m.latent_weight.uniform_(-(fan_in ** -0.5), fan_in ** -0.5)


def build_student(classes: int = 10) -> nn.Sequential:
    """A small CNN: 8 and 16 channels, a 64-wide hidden layer (about 55k parameters)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 49, 64), nn.ReLU(), nn.Linear(64, classes))


class Ensemble(nn.Module):
    """The teachers' mean probability (as log-probabilities, so ``argmax`` is its prediction):
    what the distilled student is trained to match at T = 1."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x).softmax(-1) for m in self.members]).mean(0).log()


def main(argv=None) -> dict:
    p = example_parser(__doc__.split("\n")[0])
    p.add_argument("--binary-epochs", type=int, default=8)
    p.add_argument("--skip-binary", action="store_true", help="only the distillation part")
    p.add_argument("--teachers", type=int, default=3, help="ensemble size (teachers trained from seeds 0, 1, ...)")
    p.add_argument("--teacher-epochs", type=int, default=6)
    p.add_argument("--label-smoothing", type=float, default=0.1, help="for the teachers' training")
    p.add_argument("--student-epochs", type=int, default=3)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.9, help="weight of the soft targets (1 - alpha: the labels)")
    args, data, out = parse_example(p, argv, dict(binary_epochs=2, teachers=2, teacher_epochs=2, student_epochs=1,
                                                  seeds=2))
    t_start = time.perf_counter()
    result: dict = {}
    models: dict[str, nn.Module] = {}

    if not args.skip_binary:
        log("1. binary CNN (XNOR-Net), straight-through training")
        binary = build_binary_cnn()
        init_latent(binary)
        train(binary, data, args.binary_epochs, lr=1e-3, seed=0, label="binary")
        binary.eval()  # packs the latent weights: from here on the XNOR kernels run
        for m in binary.modules():
            if isinstance(m, (BinaryConv2d, BinaryLinear)):
                m.freeze()  # drop the latent weights: one bit per weight is what is stored
        result["binary_top1"] = accuracy(binary, data)
        models["binary"] = binary
        log(f"   binary CNN top-1 {result['binary_top1']:.2%}")

    log(f"2. knowledge distillation: {args.teachers} teacher(s), label smoothing {args.label_smoothing:g}")
    teachers = []
    for k in range(args.teachers):
        torch.manual_seed(k)
        teacher = build_cnn()
        train(teacher, data, args.teacher_epochs, lr=1e-3, seed=k, label=f"teacher {k}",
              label_smoothing=args.label_smoothing)
        teachers.append(teacher.eval())
    ensemble = Ensemble(teachers).eval()
    result["teacher_top1"] = [accuracy(t, data) for t in teachers]
    result["ensemble_top1"] = accuracy(ensemble, data)
    log(f"   teachers {', '.join(f'{a:.2%}' for a in result['teacher_top1'])}; "
        f"ensemble {result['ensemble_top1']:.2%}")
    labels_only, distilled = [], []
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        init = build_student()
        student = copy.deepcopy(init)
        train(student, data, args.student_epochs, lr=2e-3, seed=seed, label=f"student labels seed {seed}")
        labels_only.append(accuracy(student, data))
        student = copy.deepcopy(init)  # the same initial weights and (train seeds it) the same batch order
        train(student, data, args.student_epochs, lr=2e-3, seed=seed, label=f"student KD seed {seed}",
              teacher=teachers, temperature=args.temperature, alpha=args.alpha)
        distilled.append(accuracy(student, data))
        log(f"   seed {seed}: labels only {labels_only[-1]:.2%}, distilled {distilled[-1]:.2%}")
    result.update(labels_only=labels_only, distilled=distilled)

    models.update(fp32=teachers[0], ensemble=ensemble, student=student)
    x1, x64 = data.x_test[:1].contiguous(), data.x_test[:64].contiguous()
    lat1, lat64 = paired_latency(models, x1), paired_latency(models, x64)

    def spread(v):
        return statistics.stdev(v) if len(v) > 1 else 0.0

    def row(name, key, top1, model):
        return {"model": name, "top1": top1, "bytes": file_bytes(model), "b1": lat1[key][0], "b64": lat64[key][0]}

    rows = [row("fp32 CNN (teacher 0)", "fp32", f"{result['teacher_top1'][0]:.2%}", teachers[0])]
    if "binary" in models:
        rows.append(row("binary CNN (XNOR, packed)", "binary", f"{result['binary_top1']:.2%}", models["binary"]))
    rows += [
        row(f"teacher ensemble ({args.teachers} x fp32 CNN, label smoothing {args.label_smoothing:g})", "ensemble",
            f"{result['ensemble_top1']:.2%}", ensemble),
        row(f"student, labels only ({args.seeds} seeds)", "student",
            f"{statistics.mean(labels_only):.2%} ± {spread(labels_only):.2%}", student),
        row(f"student, distilled T={args.temperature:g} alpha={args.alpha:g} ({args.seeds} seeds)", "student",
            f"{statistics.mean(distilled):.2%} ± {spread(distilled):.2%}", student),
    ]
    gain = 100 * (statistics.mean(distilled) - statistics.mean(labels_only))
    result["kd_gain_points"] = gain
    per_seed = ", ".join(f"{100 * (d - la):+.2f}" for d, la in zip(distilled, labels_only))
    cols = [("model", "model", str), ("top1", "top-1 (mean ± sd)", str), ("bytes", "bytes on disk", lambda v: f"{v:,}"),
            ("b1", "batch 1 ms", lambda v: f"{v:.3f}"), ("b64", "batch 64 ms", lambda v: f"{v:.2f}")]
    write_table(rows, cols, out / "binary_and_distillation.md",
                f"Binary CNN and distillation on {data.name} (KD gain {gain:+.2f} points, per seed {per_seed}; "
                f"{time.perf_counter() - t_start:.0f} s in all)")
    return result


if __name__ == "__main__":
    main()
