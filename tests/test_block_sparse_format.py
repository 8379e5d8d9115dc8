import pytest
import torch

from sparsekit.block_sparse import BSRWeight, block_norms, bsr_to_dense, validate_bsr
from sparsekit.pruning import block_magnitude_mask, expand_block_mask


@pytest.mark.parametrize("shape", [(64, 64), (37, 53), (1, 1), (100, 7), (5, 300)])
@pytest.mark.parametrize("block", [(16, 16), (32, 32), (1, 32), (8, 4), (64, 64)])
def test_mask_roundtrip_is_exact(shape, block):
    w = torch.randn(shape)
    mask = torch.rand(-(-shape[0] // block[0]), -(-shape[1] // block[1])) > 0.5
    bsr = BSRWeight.from_dense(w, block, mask=mask)
    expected = w * expand_block_mask(mask, block, shape)
    torch.testing.assert_close(bsr.dense_weight(), expected, rtol=0, atol=0)
    assert bsr.nnz_blocks == int(mask.sum())
    torch.testing.assert_close(bsr.block_mask(), mask)


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.99, 1.0])
def test_sparsity_keeps_largest_blocks(sparsity):
    w = torch.randn(96, 130)
    bsr = BSRWeight.from_dense(w, 32, sparsity=sparsity)
    nblocks = 3 * 5
    assert bsr.nnz_blocks == round((1 - sparsity) * nblocks)
    norms = block_norms(w, 32, "l1").flatten()
    kept = bsr.block_mask().flatten()
    if 0 < bsr.nnz_blocks < nblocks:
        assert norms[kept].min() >= norms[~kept].max()


def test_l1_and_l2_norms_differ_and_pick_accordingly():
    # block 0: one large weight (large L2, small L1); block 1: many medium weights
    w = torch.zeros(2, 8)
    w[0, 0] = 3.0
    w[:, 4:8] = 1.0
    assert BSRWeight.from_dense(w, (2, 4), sparsity=0.5, norm="l1").col_indices.tolist() == [1]
    w2 = w.clone()
    w2[:, 4:8] = 0.7
    assert BSRWeight.from_dense(w2, (2, 4), sparsity=0.5, norm="l2").col_indices.tolist() == [0]
    assert BSRWeight.from_dense(w2, (2, 4), sparsity=0.5, norm="l1").col_indices.tolist() == [1]


def test_block_magnitude_mask_matches_format():
    w = torch.randn(70, 90)
    mask = block_magnitude_mask(w, 16, 0.75)
    assert mask.shape == (5, 6)
    assert torch.equal(BSRWeight.from_dense(w, 16, sparsity=0.75).block_mask(), mask)


def test_density_and_bytes():
    bsr = BSRWeight.from_dense(torch.randn(64, 64), 32, sparsity=0.5)
    assert bsr.density == 0.5
    assert bsr.nbytes == 2 * 32 * 32 * 4 + 2 * 4 + 3 * 4


def _valid():
    return BSRWeight.from_dense(torch.randn(64, 96), 32, sparsity=0.5)


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda v, c, r: (v, c, torch.tensor([0, 2, 1], dtype=torch.int32)), "row_offsets"),
        (lambda v, c, r: (v, c, torch.tensor([1, 2, 3], dtype=torch.int32)), "row_offsets"),
        (lambda v, c, r: (v, c, torch.tensor([0, 1, 4], dtype=torch.int32)), "row_offsets"),
        (lambda v, c, r: (v, torch.full_like(c, 3), r), r"col_indices must lie in \[0, 3\)"),
        (lambda v, c, r: (v, torch.full_like(c, -1), r), "col_indices must lie"),
        (lambda v, c, r: (v, torch.zeros_like(c), r), "strictly increasing"),
        (lambda v, c, r: (v, c.long(), r), "int32"),
        (lambda v, c, r: (v[:, :, :16], c, r), r"\[nnz, 32, 32\]"),
        (lambda v, c, r: (v, c[:-1], r), r"col_indices must have shape"),
        (lambda v, c, r: (v, c, r[:-1]), r"row_offsets must have shape \[3\]"),
    ],
)
def test_corrupted_indices_are_rejected(corrupt, match):
    w = _valid()
    v, c, r = corrupt(w.values, w.col_indices, w.row_offsets)
    with pytest.raises((ValueError, TypeError), match=match):
        validate_bsr(v, c, r, (64, 96), (32, 32))
    with pytest.raises((ValueError, TypeError), match=match):
        BSRWeight(v, c, r, (64, 96), (32, 32))


def test_from_dense_rejects_bad_arguments():
    w = torch.randn(64, 64)
    with pytest.raises(ValueError, match="exactly one"):
        BSRWeight.from_dense(w, 32)
    with pytest.raises(ValueError, match="mask must be a bool tensor of shape \\[2, 2\\]"):
        BSRWeight.from_dense(w, 32, mask=torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="sparsity"):
        BSRWeight.from_dense(w, 32, sparsity=1.5)
    with pytest.raises(ValueError, match="block_size"):
        BSRWeight.from_dense(w, 0, sparsity=0.5)
    with pytest.raises(ValueError, match="2-D"):
        BSRWeight.from_dense(torch.randn(4, 4, 4), 2, sparsity=0.5)
    with pytest.raises(TypeError, match="floating"):
        BSRWeight.from_dense(torch.ones(4, 4, dtype=torch.int64), 2, sparsity=0.5)
    with pytest.raises(ValueError, match="norm"):
        BSRWeight.from_dense(w, 32, sparsity=0.5, norm="l3")


def test_empty_rows_and_full_density():
    w = torch.randn(96, 64)
    mask = torch.tensor([[True, False], [False, False], [True, True]])
    bsr = BSRWeight.from_dense(w, 32, mask=mask)
    assert bsr.row_offsets.tolist() == [0, 1, 1, 3]
    full = BSRWeight.from_dense(w, 32, sparsity=0.0)
    torch.testing.assert_close(full.dense_weight(), w, rtol=0, atol=0)
    empty = BSRWeight.from_dense(w, 32, sparsity=1.0)
    assert empty.nnz_blocks == 0 and bool((empty.dense_weight() == 0).all())
    torch.testing.assert_close(bsr_to_dense(bsr.values, bsr.col_indices, bsr.row_offsets, (96, 64)), bsr.dense_weight())
