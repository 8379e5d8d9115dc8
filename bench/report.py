"""Turns a pytest-benchmark JSON file into ratios against PyTorch measured in the same run.

    python bench/report.py bench/results/latest.json [--out bench/results]

Prints a Markdown table (median time, p25-p75 spread, ratio = baseline median /
provider median, >1 is faster than PyTorch), writes it with a CSV whose every row
records device, versions and commit, and draws PNG figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections import defaultdict


def load(path: str) -> list[dict]:
    with open(path) as f:
        data = json.load(f)
    rows = []
    for b in data["benchmarks"]:
        info, st = b.get("extra_info", {}), b["stats"]
        rows.append(dict(group=b["group"], provider=info.get("provider", b["name"]), baseline=info.get("baseline"),
                         median_ms=st["median"] * 1e3, q1_ms=st["q1"] * 1e3, q3_ms=st["q3"] * 1e3,
                         rounds=st["rounds"], info=info))
    by_group = defaultdict(dict)
    for r in rows:
        by_group[r["group"]][r["provider"]] = r
    for r in rows:
        base = by_group[r["group"]].get(r["baseline"])
        r["ratio"] = base["median_ms"] / r["median_ms"] if base and r["median_ms"] > 0 else float("nan")
        # spread of the ratio from the quartiles of both timings
        r["ratio_lo"] = base["q1_ms"] / r["q3_ms"] if base else float("nan")
        r["ratio_hi"] = base["q3_ms"] / r["q1_ms"] if base else float("nan")
    return rows


def markdown(rows: list[dict], prefix: str = "") -> str:
    sel = [r for r in rows if r["group"].startswith(prefix)]
    order = {g: i for i, g in enumerate(dict.fromkeys(r["group"] for r in sel))}
    # each group together, its baseline first
    sel.sort(key=lambda r: (order[r["group"]], r["provider"] != r["baseline"]))
    if not sel:
        return ""
    out = ["| shape (group) | provider | median ms | p25–p75 ms | × vs baseline (p25–p75) |",
           "|---|---|---:|---:|---:|"]
    for r in sel:
        out.append(f"| {r['group']} | {r['provider']} | {r['median_ms']:.3f} | {r['q1_ms']:.3f}–{r['q3_ms']:.3f} | "
                   f"**{r['ratio']:.2f}×** ({r['ratio_lo']:.2f}–{r['ratio_hi']:.2f}) |")
    return "\n".join(out)


def machine_line(rows: list[dict]) -> str:
    i = rows[0]["info"]
    keys = ["device", "cpu_isa", "torch", "triton", "sparsekit", "commit"]
    return "Machine: " + ", ".join(f"{k} {i[k]}" for k in keys if k in i)


def write_csv(rows: list[dict], path: str) -> None:
    keys = ["group", "provider", "baseline", "median_ms", "q1_ms", "q3_ms", "rounds", "ratio"]
    extra = sorted({k for r in rows for k in r["info"]} - set(keys))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(keys + extra)
        for r in rows:
            w.writerow([r[k] for k in keys] + [r["info"].get(k, "") for k in extra])


def figures(rows: list[dict], outdir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig, name: str) -> str:
        fig.tight_layout()
        path = os.path.join(outdir, name)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path

    made = []
    bsr = [r for r in rows if r["group"].startswith("bsr/") and r["provider"] != r["baseline"]]
    if bsr:
        groups = list(dict.fromkeys(r["group"] for r in bsr))
        providers = list(dict.fromkeys(r["provider"] for r in bsr))
        fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(groups)), 4.5))
        width = 0.8 / len(providers)
        for i, p in enumerate(providers):
            vals = [next((r["ratio"] for r in bsr if r["group"] == g and r["provider"] == p), 0) for g in groups]
            ax.bar([j + i * width for j in range(len(groups))], vals, width, label=p)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))])
        ax.set_xticklabels([g.split("/", 2)[2] for g in groups], rotation=45, ha="right", fontsize=7)
        ax.set_ylabel("speedup vs torch dense (median)")
        ax.set_yscale("log")
        ax.legend()
        ax.set_title(f"block-sparse linear — {machine_line(rows)[9:80]}", fontsize=8)
        made.append(save(fig, "bsr_speedup.png"))
    sweep = [r for r in rows if r["group"].startswith("sweep/")]
    if sweep:
        ms = sorted({int(r["info"]["M"]) for r in sweep})
        fig, axes = plt.subplots(1, len(ms), figsize=(6 * len(ms), 4.5), squeeze=False)
        for ax, M in zip(axes[0], ms):
            sel = [r for r in sweep if int(r["info"]["M"]) == M and r["provider"] != "dense"]
            for p in dict.fromkeys(r["provider"] for r in sel):
                pts = sorted((float(r["info"]["sparsity"]), r["ratio"]) for r in sel if r["provider"] == p)
                ax.plot([100 * s for s, _ in pts], [v for _, v in pts], marker="o", label=p)
            ax.axhline(1.0, color="k", lw=0.8)
            ax.set_yscale("log")
            ax.set_xlabel("sparsity (%)")
            ax.set_ylabel("speedup vs dense (median)")
            ax.set_title(f"M = {M}")
            ax.legend(fontsize=7)
        fig.suptitle(f"speedup vs sparsity — {machine_line(rows)[9:90]}", fontsize=8)
        made.append(save(fig, "sparsity_sweep.png"))
    return made


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("json")
    ap.add_argument("--out", default=None, help="folder for report.md, results.csv and PNGs (default: beside the JSON)")
    args = ap.parse_args(argv)
    rows = load(args.json)
    if not rows:
        raise SystemExit(f"{args.json}: no benchmarks")
    outdir = args.out or os.path.dirname(os.path.abspath(args.json))
    os.makedirs(outdir, exist_ok=True)
    sections = [("Block-sparse linear vs torch F.linear (fp32)", "bsr/"),
                ("Speedup vs sparsity: unstructured vs block vs neuron pruning", "sweep/"),
                ("XNOR-popcount GEMM on packed operands vs torch fp32 matmul", "xnor/"),
                ("BinaryLinear (XNOR-Net; x packed inside) vs nn.Linear fp32", "binary_linear/"),
                ("BinaryConv2d (XNOR-Net) vs nn.Conv2d fp32", "binary_conv2d/"),
                ("BinaryConnect linear (binary weights, fp32 activations) vs nn.Linear fp32", "binary_connect/"),
                ("CodebookLinear (k-means clustered weights) vs nn.Linear fp32", "codebook/"),
                ("CodebookLinear, weights not cache-resident (a new layer every call)", "codebook_cold/"),
                ("DepthwiseSeparableConv2d (fused 3x3 depthwise -> ReLU6 -> 1x1) vs PyTorch's two convolutions",
                 "dwsep/"),
                ("Pretrained EfficientNet-Lite0 end to end, depthwise-separable blocks fused vs as is", "dwsep_e2e/"),
                ("Cost of a module call at M = 1 on real models' layer sizes vs nn.Linear (K=N=64: the fixed cost; "
                 "mlp: torch.compile vs eager)", "overhead/")]
    text = [machine_line(rows), ""]
    for title, prefix in sections:
        table = markdown(rows, prefix)
        if table:
            text += [f"### {title}", "", table, ""]
    text = "\n".join(text)
    print(text)
    with open(os.path.join(outdir, "report.md"), "w") as f:
        f.write(text + "\n")
    write_csv(rows, os.path.join(outdir, "results.csv"))
    for p in figures(rows, outdir):
        print(f"figure: {p}")


if __name__ == "__main__":
    main()
