"""The block partitioner and ownership by block (docs/SCALE_OUT.md), without a broker.

Producers put the batch of data second ``s`` in partition ``floor(s / B) % P``; a
shared stage's stride belongs to the partition of its block; a replica's reader needs
its own blocks plus ``pad`` seconds on each side, nothing else.
"""

from __future__ import annotations

import pytest

from idq_common.io.publish import FeaturePublisher, block_of, block_partition
from idq_common.streaming.block_source import needed_ranges
from idq_common.streaming.checkpoint import stride_owner

B = 16.0


def test_block_partition_is_the_block_number_modulo_partitions() -> None:
    assert [block_partition(t, B, 2) for t in (0, 15.5, 16, 31.999, 32, 48)] == [0, 0, 1, 1, 0, 1]
    assert [block_partition(t, B, 3) for t in (0, 16, 32, 48)] == [0, 1, 2, 0]
    # a batch start computed as start + k * batch may land a rounding error below an edge
    assert block_of(0.1 * 160, B) == 1 and block_of(15.999999, B) == 0


def test_stride_ownership_by_block_and_by_stride() -> None:
    # 1 s strides, 16 per block, 2 partitions: blocks alternate
    owners = [stride_owner(k, 2, 16) for k in range(64)]
    assert owners == [0] * 16 + [1] * 16 + [0] * 16 + [1] * 16
    # 4 s strides (evaluate): 4 per block; the owner is the partition of the data
    assert [stride_owner(k, 2, 4) for k in range(8)] == [0, 0, 0, 0, 1, 1, 1, 1]
    for k in range(64):
        assert stride_owner(k, 2, 16) == block_partition(k * 1.0, B, 2)
    # without blocks: stride k % P, as before
    assert [stride_owner(k, 3) for k in range(6)] == [0, 1, 2, 0, 1, 2]


def test_a_replica_needs_its_blocks_and_the_pads_around_them() -> None:
    pad = 0.5
    # partition 0 of 2 holds blocks 0, 2, 4...
    assert needed_ranges(0, {0}, 2, B, pad) == [(0.0, 16.0)]
    assert needed_ranges(1, {0}, 2, B, pad) == [(16.0, 16.5), (31.5, 32.0)]
    assert needed_ranges(2, {0}, 2, B, pad) == [(32.0, 48.0)]
    assert needed_ranges(1, {0, 1}, 2, B, pad) == [(16.0, 32.0)]
    assert needed_ranges(1, set(), 2, B, pad) == []
    # a partition taken over: its blocks before the committed progress are done
    assert needed_ranges(1, {0, 1}, 2, B, pad, done={1: 32.0}) == [(16.0, 16.5), (31.5, 32.0)]
    assert needed_ranges(3, {0, 1}, 2, B, pad, done={1: 32.0}) == [(48.0, 64.0)]
    # 3 partitions: a block between two others' blocks is not needed at all
    assert needed_ranges(1, {0}, 3, B, pad) == [(16.0, 16.5)]
    assert needed_ranges(2, {0}, 3, B, pad) == [(47.5, 48.0)]
    assert needed_ranges(4, {0}, 3, B, pad) == [(64.0, 64.5)]
    # a pad longer than a block reaches over it
    assert needed_ranges(1, {0}, 3, 1.0, 1.5) == [(1.0, 2.0)]
    assert needed_ranges(2, {0}, 3, 1.0, 1.5) == [(2.0, 3.0)]  # 1.5 s of block 0 or 3 reach


def test_the_data_read_per_replica_is_its_share_plus_the_pads() -> None:
    pad, parts = 0.5, 4
    for p in range(parts):
        total = sum(y - x for c in range(400) for x, y in needed_ranges(c, {p}, parts, B, pad))
        # (1/N) (1 + 2 pad / B) of the topic (docs/SCALE_OUT.md)
        assert total == pytest.approx(400 * B / parts * (1 + 2 * pad / B), abs=2 * B)


def test_the_block_publisher_needs_whole_batches_per_block() -> None:
    with pytest.raises(ValueError, match="multiple of batch_seconds"):
        FeaturePublisher(None, "t", "H1", "s", 3.0, "block", partitions=2, block_seconds=16)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs the partition count"):
        FeaturePublisher(None, "t", "H1", "s", 1.0, "block", block_seconds=16)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'key', 'round_robin' or 'block'"):
        FeaturePublisher(None, "t", "H1", "s", 1.0, "time", partitions=2)  # type: ignore[arg-type]
    pub = FeaturePublisher(None, "t", "H1", "s", 0.25, "block", partitions=2, block_seconds=16)  # type: ignore[arg-type]
    assert pub.block_seconds == 16.0
