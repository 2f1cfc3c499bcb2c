"""Data: split by reference, bad files skipped once, identical augmentation of both sides."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from model.augment import PairAugment, PairGain, PairShift, SwapAB, align_pair
from model.data import AudioStore, PairDataset, ShardedSampler, pairs_from_triplets, split_by_reference


def test_split_never_leaks_a_reference():
    rng = np.random.default_rng(0)
    pairs = pd.DataFrame(
        {"reference": [f"ref{i}" for i in rng.integers(0, 17, 300)], "ref_audio": "", "test_audio": "", "label": 0}
    )
    for seed in range(20):
        train, val = split_by_reference(pairs, 0.25, seed)
        assert set(train["reference"]).isdisjoint(val["reference"])
        assert len(train) + len(val) == len(pairs) and len(val) > 0 and len(train) > 0
    # deterministic for one seed, different across seeds
    assert split_by_reference(pairs, 0.25, 1)[1].equals(split_by_reference(pairs, 0.25, 1)[1])
    assert any(
        not split_by_reference(pairs, 0.25, 1)[1].equals(split_by_reference(pairs, 0.25, s)[1]) for s in range(2, 6)
    )


def test_split_of_triplets_from_files(pair_set):
    path, audio = pair_set
    train, val = split_by_reference(pairs_from_triplets(path, audio), 0.25, 0)
    assert set(train["reference"]).isdisjoint(val["reference"]) and len(val) == 4


def test_missing_and_corrupt_files_are_reported_once_and_skipped(pair_set, caplog):
    path, audio = pair_set
    (audio / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    with open(path, "a") as fh:
        for _ in range(3):
            fh.write("ref0.wav\tmissing.wav\t1\n")
            fh.write("ref1.wav\tcorrupt.wav\t0\n")
    pairs = pairs_from_triplets(path, audio)
    store = AudioStore(16000)
    with caplog.at_level(logging.WARNING, logger="model.data"):
        usable = store.usable(pairs)
        dataset = PairDataset(pairs, store, 4000, None, train=False)  # unchecked rows: skipped at load
        items = [dataset[i] for i in range(len(dataset))]
    assert len(usable) == 16 and len(pairs) == 22
    assert sum(it is None for it in items) == 6
    messages = [r.getMessage() for r in caplog.records]
    assert sum("missing.wav" in m for m in messages) == 1
    assert sum("corrupt.wav" in m for m in messages) == 1
    assert any("does not exist" in m for m in messages)


def test_unequal_lengths_are_cropped_then_padded():
    a, b = np.ones(100, np.float32), 2 * np.ones(80, np.float32)
    x, y = align_pair(a, b, None, None, None)
    assert len(x) == len(y) == 80
    x, y = align_pair(a, b, 120, None, None)
    assert len(x) == len(y) == 120 and x[80:].sum() == 0 and y[80:].sum() == 0
    x, y = align_pair(np.arange(100.0), np.arange(100.0), 10, None, np.random.default_rng(0))
    assert np.array_equal(x, y)


def test_augmentation_changes_both_sides_alike():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(4000).astype(np.float32)
    b = (a + 0.1 * rng.standard_normal(4000)).astype(np.float32)
    params = PairGain(-6, 6).sample(np.random.default_rng(5))
    ga, gb = PairGain.apply(a, b, **params)
    np.testing.assert_allclose(ga / a, gb / b, rtol=1e-5)
    sa, sb = PairShift.apply(a, b, shift_samples=37)
    assert np.array_equal(sa[37:], a[:-37]) and np.array_equal(sb[37:], b[:-37]) and not sa[:37].any()
    assert SwapAB.apply(a, b, swap=True)[0] is b
    with pytest.raises(ValueError):
        PairGain(3, -3)
    # the composed augmentation keeps the pair's difference the same up to a common gain/shift
    aug = PairAugment(PairGain(0, 0), PairShift(0.0), SwapAB(0.0))
    x, y = aug(a, b, 16000, np.random.default_rng(1))
    assert np.array_equal(x, a) and np.array_equal(y, b)


def test_sharded_sampler_covers_the_same_global_batches():
    single = list(ShardedSampler(12, seed=3))
    r0, r1 = list(ShardedSampler(12, 3, rank=0, world_size=2)), list(ShardedSampler(12, 3, rank=1, world_size=2))
    for step in range(3):  # global batch 4 = 2 per rank
        assert sorted(single[4 * step : 4 * step + 4]) == sorted(
            r0[2 * step : 2 * step + 2] + r1[2 * step : 2 * step + 2]
        )
