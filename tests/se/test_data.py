"""Paired folders, on-the-fly synthesis and the fixed held-out set."""

from __future__ import annotations

import numpy as np
import pytest

from perturbations.audio import save_audio
from se.data import (
    HELDOUT_CLEAN,
    HELDOUT_CSV,
    HELDOUT_NOISY,
    NoiseSpec,
    PairedDataset,
    PairError,
    SyntheticDataset,
    check_heldout,
    find_pair_dirs,
    match_pairs,
    read_heldout_csv,
    split_clean_corpus,
    write_heldout,
)


def _pairs(root, names=("a.wav", "b.wav"), n=1600):
    for name in names:
        save_audio(root / "noisy_trainset_wav" / name, np.full(n, 0.1, np.float32), 16000)
        save_audio(root / "clean_trainset_wav" / name, np.full(n, 0.05, np.float32), 16000)
    return root / "noisy_trainset_wav", root / "clean_trainset_wav"


def test_valentini_layout_pairs_and_crops(tmp_path):
    noisy_dir, clean_dir = _pairs(tmp_path)
    assert find_pair_dirs(tmp_path, "train") == (noisy_dir, clean_dir)
    pairs = match_pairs(noisy_dir, clean_dir)
    assert [p.name for p in pairs] == ["a.wav", "b.wav"] and pairs[0].num_samples == 1600
    ds = PairedDataset(pairs, 16000, 1000, seed=1)
    noisy, clean = ds.item(0, epoch=0)
    assert noisy.shape == clean.shape == (1000,) and np.allclose(noisy, 0.1) and np.allclose(clean, 0.05)
    assert PairedDataset(pairs, 16000, 4000, seed=1).item(1, 0)[1][1600:].max() == 0  # short: zero-padded


def test_unmatched_and_mismatched_pairs_name_the_files(tmp_path):
    noisy_dir, clean_dir = _pairs(tmp_path)
    save_audio(noisy_dir / "extra.wav", np.zeros(10, np.float32), 16000)
    with pytest.raises(PairError, match="1 noisy file.*extra.wav"):
        match_pairs(noisy_dir, clean_dir)
    save_audio(clean_dir / "extra.wav", np.zeros(11, np.float32), 16000)
    with pytest.raises(PairError, match=r"extra.wav has 10 samples but .*extra.wav has 11"):
        match_pairs(noisy_dir, clean_dir)
    save_audio(clean_dir / "extra.wav", np.zeros(10, np.float32), 22050)
    with pytest.raises(PairError, match="16000 Hz but .* 22050 Hz"):
        match_pairs(noisy_dir, clean_dir)
    with pytest.raises(PairError, match="holds no noisy/clean folder pair"):
        find_pair_dirs(tmp_path / "noisy_trainset_wav")


def test_synthesis_is_seeded_per_item_and_mixes_at_the_snr(clean_corpus, noise_dir):
    train, _, _ = split_clean_corpus(clean_corpus, 0.2, seed=0)
    spec = NoiseSpec((0.0, 10.0), str(noise_dir))
    ds = SyntheticDataset(train, 16000, 4000, spec, seed=3)
    a_noisy, a_clean = ds.item(2, epoch=1)
    b_noisy, b_clean = SyntheticDataset(train, 16000, 4000, spec, seed=3).item(2, epoch=1)
    assert np.array_equal(a_noisy, b_noisy) and np.array_equal(a_clean, b_clean)
    assert not np.array_equal(ds.item(2, epoch=2)[0], a_noisy)
    noise = a_noisy.astype(np.float64) - a_clean
    snr_db = 10 * np.log10(np.mean(a_clean.astype(np.float64) ** 2) / np.mean(noise**2))
    assert 0.0 - 1e-3 <= snr_db <= 10.0 + 1e-3


def test_heldout_set_is_deterministic_and_checked(clean_corpus, noise_dir, tmp_path):
    _, held, ids = split_clean_corpus(clean_corpus, 0.34, seed=4)
    assert len(held) == 2 and split_clean_corpus(clean_corpus, 0.34, seed=4)[1] == held
    spec = NoiseSpec((-5.0, 5.0), str(noise_dir))
    first = write_heldout(held, ids, tmp_path / "h1", spec, 16000, seed=4)
    second = write_heldout(held, ids, tmp_path / "h2", spec, 16000, seed=4)
    rows1, rows2 = read_heldout_csv(first.parent), read_heldout_csv(second.parent)
    assert rows1 == rows2 and len(rows1) == 2
    for name in rows1:
        for sub in (HELDOUT_NOISY, HELDOUT_CLEAN):
            assert (first.parent / sub / name).read_bytes() == (second.parent / sub / name).read_bytes()
        assert -5.0 <= float(rows1[name]["snr_db"]) <= 5.0 and rows1[name]["noise_type"] in (
            "white",
            "pink",
            "blue",
            "brown",
            "violet",
        )
    assert first.name == HELDOUT_CSV and check_heldout(first.parent) == []
    victim = first.parent / HELDOUT_NOISY / next(iter(rows1))
    save_audio(victim, np.zeros(100, np.float32), 16000)
    assert check_heldout(first.parent) == [str(victim)]


def test_heldout_mixtures_per_clip_and_the_training_split(clean_corpus, noise_dir, tmp_path):
    from se.data import exclude_heldout, heldout_clean_sources

    spec = NoiseSpec((-5.0, 5.0), str(noise_dir))
    _, held, ids = split_clean_corpus(clean_corpus, 0.34, seed=4)
    csv_path = write_heldout(held, ids, tmp_path / "h", spec, 16000, seed=4, mixtures_per_clip=3)
    rows = read_heldout_csv(csv_path.parent)
    assert sorted(rows) == sorted(f"{i}__m{k}.wav" for i in ids for k in range(3))
    assert {r["clean_id"] for r in rows.values()} == set(ids)
    # different draws per mixture, all of the same clean clip
    first = [rows[f"{ids[0]}__m{k}.wav"] for k in range(3)]
    assert len({r["snr_db"] for r in first}) == 3 and len({r["clean_sha256"] for r in first}) == 1
    # one mixture per clip keeps the original names and bytes
    single = write_heldout(held, ids, tmp_path / "h1", spec, 16000, seed=4)
    again = write_heldout(held, ids, tmp_path / "h2", spec, 16000, seed=4, mixtures_per_clip=1)
    assert sorted(read_heldout_csv(single.parent)) == sorted(f"{i}.wav" for i in ids)
    assert (single.parent / HELDOUT_NOISY / f"{ids[0]}.wav").read_bytes() == (
        again.parent / HELDOUT_NOISY / f"{ids[0]}.wav"
    ).read_bytes()
    paths, found_ids = heldout_clean_sources(csv_path.parent)
    assert found_ids == set(ids) and paths == {p.resolve() for p in held}
    kept = exclude_heldout(clean_corpus, csv_path.parent)
    assert len(kept) == 6 - len(held) and not {p.resolve() for p in kept} & paths
    with pytest.raises(ValueError):
        write_heldout(held, ids, tmp_path / "h3", spec, 16000, seed=4, mixtures_per_clip=0)
