"""The codebook format: k-means weight clustering (Deep Compression's weight sharing).

A weight ``W [N, K]`` becomes a table of ``2**bits`` centroids per group of ``group_size``
output rows (``codebook [G, 2**bits]``, G = ceil(N / group_size); one group when
``group_size`` is None) and one ``bits``-bit index per weight: ``W[n, k] = codebook[n //
group_size, idx[n, k]]``.

Index layout (what the kernels read): each row's indices packed along K into int32 words,
``32 / field`` indices per word, index k in word ``k // (32 / field)`` at bit ``field * (k %
(32 / field))`` (little-endian), unused fields zero. ``field`` is the bit width of a field:
1, 2, 4, 4 for bits = 1, 2, 3, 4 — 3-bit indices sit in 4-bit fields in memory, so that a
field never straddles a 4-bit lookup group (the compressed file format drops that slack). A 3-bit
field >= 8 is invalid wherever it is read (:func:`check_index_fields`): loading a state dict, the
reference, and the native kernels (which fold the check into the pass they make over the words)
all raise ValueError for it.

Clustering is 1-D Lloyd k-means per group, deterministic: quantile initialisation (every
initial cluster holds about n / k weights, so none starts empty), exact nearest-centroid
assignment through the sorted centroids' midpoints, centroid = mean of its members, and a
cluster that empties is re-seeded at the weight worst served by its centroid. On sorted
weights with prefix sums an iteration costs O(k log n), so it runs to the fixed point.
"""

from __future__ import annotations

from typing import Optional

import torch

from .._checks import check_shape, check_tensor

# version of the index layout above, as ``CodebookLinear``'s state dict records it (the first field
# of its ``format`` record): bump it when the layout changes, so old checkpoints are refused, not misread
FORMAT_VERSION = 1

SUPPORTED_BITS = (1, 2, 3, 4)


def check_bits(bits: int) -> int:
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits!r}")
    return bits


def field_bits(bits: int) -> int:
    """Bits of the field one index occupies in memory (3-bit indices use 4-bit fields)."""
    return {1: 1, 2: 2, 3: 4, 4: 4}[check_bits(bits)]


# the high bit of every 4-bit field of an int32 index word (0x88888888 as two's complement)
_FIELD4_HIGH_BITS = -0x77777778


def check_index_fields(packed: torch.Tensor, bits: int, name: str = "indices") -> None:
    """ValueError if packed 3-bit indices hold a field >= 8 (in the fields past K too, which must be
    0). Their fields are 4 bits wide, so the layout can hold values the codebook has no entry for;
    the other widths cannot. Traced (fake) and meta tensors have no values to check."""
    if bits == 3 and type(packed) is torch.Tensor and packed.device.type != "meta":
        if bool((packed & _FIELD4_HIGH_BITS).any()):
            raise ValueError(f"{name}: an index is >= 8 (bits=3; every 4-bit field must be < 8)")


def index_words(K: int, bits: int) -> int:
    """int32 words per row for K indices."""
    per = 32 // field_bits(bits)
    return (K + per - 1) // per


def num_groups(N: int, group_size: int) -> int:
    return (N + group_size - 1) // group_size if N else 0


def resolve_group_size(N: int, group_size: Optional[int]) -> int:
    """``group_size`` as stored: the number of rows sharing a codebook (N for one per tensor)."""
    if group_size is None:
        return max(N, 1)
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int or None, got {group_size!r}")
    return group_size


@torch.no_grad()
def kmeans_1d(values: torch.Tensor, k: int, iters: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd k-means of each row of ``values [G, n]`` into ``k`` clusters.

    Returns ``(centroids [G, k] sorted ascending, assignment [G, n] int64)``. Deterministic.
    The values are sorted once with prefix sums, so in 1-D a cluster is a run of sorted values:
    an iteration finds the k - 1 run boundaries by binary search and each mean from two prefix
    sums, O(k log n) instead of O(n). It stops at a fixed point (no boundary moves: every weight
    is nearest its centroid and every centroid is its members' mean) or after ``iters``.
    """
    if values.dim() != 2:
        raise ValueError(f"values must be 2-D [groups, n], got shape {list(values.shape)}")
    G, n = values.shape
    if n == 0:
        return (torch.zeros(G, k, dtype=values.dtype, device=values.device),
                torch.zeros(G, 0, dtype=torch.int64, device=values.device))
    s, _ = torch.sort(values.float(), dim=1)
    cs = torch.zeros(G, n + 1, dtype=torch.float64, device=values.device)
    cs[:, 1:] = torch.cumsum(s, dim=1, dtype=torch.float64)
    # quantile initialisation: every cluster starts with about n / k values, none empty
    c = s[:, ((torch.arange(k, device=values.device) + 0.5) * n / k).long().clamp_(max=n - 1)].double()
    bounds = None
    for _ in range(max(iters, 1)):
        c, _ = torch.sort(c, dim=1)
        mid = ((c[:, 1:] + c[:, :-1]) / 2).float()
        inner = torch.searchsorted(s, mid.contiguous(), right=True)  # cluster j: mid[j-1] < v <= mid[j]
        new = torch.cat([torch.zeros(G, 1, dtype=inner.dtype, device=s.device), inner,
                         torch.full((G, 1), n, dtype=inner.dtype, device=s.device)], dim=1)
        if bounds is not None and torch.equal(new, bounds):
            break
        bounds = new
        counts = (bounds[:, 1:] - bounds[:, :-1]).double()
        sums = cs.gather(1, bounds[:, 1:]) - cs.gather(1, bounds[:, :-1])
        empty = counts == 0
        c = torch.where(empty, c, sums / counts.clamp_min(1))
        if bool(empty.any()):  # re-seed one empty cluster per group at its worst-served value
            lo = s.gather(1, bounds[:, :-1].clamp(max=n - 1)).double()
            hi = s.gather(1, (bounds[:, 1:] - 1).clamp(min=0)).double()
            err = torch.where(empty, torch.zeros_like(c), torch.maximum((lo - c).abs(), (hi - c).abs()))
            worst_cluster = err.argmax(dim=1, keepdim=True)
            wl, wh = lo.gather(1, worst_cluster), hi.gather(1, worst_cluster)
            cw = c.gather(1, worst_cluster)
            worst = torch.where((wl - cw).abs() >= (wh - cw).abs(), wl, wh)
            first_empty = empty.double().argmax(dim=1, keepdim=True)
            has = empty.any(dim=1, keepdim=True)
            c = torch.where(has & (torch.arange(k, device=c.device) == first_empty), worst, c)
    c, _ = torch.sort(c, dim=1)
    return c.to(values.dtype), _nearest(values.float().contiguous(), c)


def _nearest(v: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Index of the nearest of the sorted centroids ``c`` (float64; a value exactly between two
    goes to the lower), with the same float32 midpoints the iterations use."""
    return torch.searchsorted(((c[:, 1:] + c[:, :-1]) / 2).float().contiguous(), v)


def cluster_weight(weight: torch.Tensor, bits: int, group_size: Optional[int] = None,
                   iters: int = 30, keep_zeros: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means of a weight ``[N, K]`` into ``2**bits`` centroids per group of rows.

    ``keep_zeros``: the weight's exact zeros (a pruned layer) get centroid 0 of every group, fixed
    at 0.0, and the other values share the remaining ``2**bits - 1`` centroids (Deep Compression:
    pruned weights stay pruned). Returns ``(codebook [G, 2**bits] float32, idx [N, K] int64)``."""
    check_bits(bits)
    check_tensor("weight", weight, dtypes=(torch.float32, torch.float16, torch.bfloat16, torch.float64), dim=2)
    N, K = weight.shape
    gs = resolve_group_size(N, group_size)
    G = num_groups(N, gs)
    w = weight.detach().float()
    pad = G * gs - N
    rows = torch.cat([w, w[-1:].expand(pad, K)]) if pad else w  # the last group repeats its last row
    if keep_zeros:
        if bits < 2:
            raise ValueError("keep_zeros needs bits >= 2 (one centroid is the zero)")
        groups = rows.reshape(G, gs * K)
        codebook = torch.zeros(G, 2**bits, dtype=torch.float32, device=w.device)
        assign = torch.zeros(G, gs * K, dtype=torch.int64, device=w.device)
        for g in range(G):
            nz = groups[g] != 0
            if bool(nz.any()):
                c, a = kmeans_1d(groups[g][nz].unsqueeze(0), 2**bits - 1, iters)
                codebook[g, 1:] = c[0].float()
                assign[g, nz] = a[0] + 1
        return codebook, assign.reshape(G * gs, K)[:N]
    codebook, assign = kmeans_1d(rows.reshape(G, gs * K), 2**bits, iters)
    return codebook.float(), assign.reshape(G * gs, K)[:N]


def pack_indices(idx: torch.Tensor, bits: int) -> torch.Tensor:
    """``idx [N, K]`` (values < 2**bits) -> int32 ``[N, index_words(K, bits)]`` (module docstring)."""
    check_bits(bits)
    N, K = idx.shape
    f = field_bits(bits)
    per = 32 // f
    W = index_words(K, bits)
    padded = torch.zeros(N, W * per, dtype=torch.int64, device=idx.device)
    padded[:, :K] = idx.to(torch.int64)
    if bool((padded >> bits).any()) or bool((padded < 0).any()):
        raise ValueError(f"indices must be in [0, {2**bits}) for bits={bits}")
    shifts = torch.arange(per, device=idx.device, dtype=torch.int64) * f
    words = (padded.view(N, W, per) << shifts).sum(dim=2)  # fields are disjoint: sum = or
    return (words - (words >= 2**31).long() * 2**32).to(torch.int32)  # as two's complement int32


def unpack_indices(packed: torch.Tensor, bits: int, K: int) -> torch.Tensor:
    """Inverse of :func:`pack_indices`: int64 ``[N, K]``."""
    check_bits(bits)
    check_tensor("indices", packed, dtypes=(torch.int32,), dim=2)
    check_shape("indices", packed, (packed.shape[0], index_words(K, bits)))
    check_index_fields(packed, bits)
    f = field_bits(bits)
    per = 32 // f
    words = packed.to(torch.int64) & 0xFFFFFFFF
    shifts = torch.arange(per, device=packed.device, dtype=torch.int64) * f
    fields = (words.unsqueeze(2) >> shifts) & ((1 << f) - 1)
    return fields.reshape(packed.shape[0], packed.shape[1] * per)[:, :K]  # not -1: N or K may be 0


def codebook_dense(packed: torch.Tensor, codebook: torch.Tensor, bits: int, K: int, group_size: int) -> torch.Tensor:
    """The dense weight ``[N, K]`` a packed codebook weight stands for."""
    idx = unpack_indices(packed, bits, K)
    N = packed.shape[0]
    group = torch.arange(N, device=packed.device) // group_size
    return codebook[group.unsqueeze(1), idx]


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB."""
    reference, approx = reference.detach().double(), approx.detach().double()
    noise = (reference - approx).pow(2).mean()
    return float(10 * torch.log10(reference.pow(2).mean() / noise.clamp_min(1e-300)))
