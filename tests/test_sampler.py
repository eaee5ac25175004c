"""The resumable batch order: deterministic, rank-disjoint, equal per rank, grouped by length."""

import pytest

from training.sampler import ResumableBatchSampler


def batches(rank, world, start=0, stop=12, lengths=None, rows=40):
    return list(ResumableBatchSampler(rows, 4, seed=3, rank=rank, world=world, start=start, stop=stop, lengths=lengths))


@pytest.mark.parametrize("lengths", [None, [((i * 37) % 23) + 1 for i in range(40)]])
def test_order_is_a_pure_function_of_the_step(lengths):
    full = batches(0, 1, lengths=lengths)
    assert batches(0, 1, start=5, lengths=lengths) == full[5:]  # what --resume relies on
    assert all(len(b) == 4 for b in full)
    epoch0 = [index for epoch, index in sum(full[:10], []) if epoch == 0]
    assert sorted(epoch0) == list(range(40))  # every row once per epoch


def test_ranks_get_disjoint_equal_shares():
    first, second = batches(0, 2, stop=5), batches(1, 2, stop=5)
    assert len(first) == len(second) == 5
    rows_first = {i for b in first for _, i in b}
    assert rows_first.isdisjoint({i for b in second for _, i in b})


def test_grouping_by_length_reduces_padding():
    lengths = [((i * 37) % 23) * 10 + 5 for i in range(640)]

    def padding(bs):
        return sum(max(lengths[i] for _, i in b) * len(b) - sum(lengths[i] for _, i in b) for b in bs)

    grouped = batches(0, 1, stop=160, lengths=lengths, rows=640)
    plain = batches(0, 1, stop=160, rows=640)
    assert padding(grouped) < 0.3 * padding(plain)


def test_too_few_rows_for_one_batch():
    with pytest.raises(ValueError, match="fewer than one batch"):
        ResumableBatchSampler(3, 4, 0, 0, 1, 0, 1)
