"""DPAM dataset_eq.txt and dataset_combined.txt: parsing, JND as a level-vector
distance, false alarms on identical pairs, the CLI, on lines written in that format."""

import math

import numpy as np
import pytest

from analysis.__main__ import main
from analysis.dpam_human import distance_tables, false_alarm_table, load_multilevel

TRUE_JND, SCALE, GUESS, LAPSE = 30.0, 6.0, 0.08, 0.03


def write_lines(path, kind, rng, n_levels, per_distance=30, n_identical=60):
    """DPAM-format lines: kind_K/L1_..._Ln_<clip>.wav pairs from a known observer."""
    lines = []
    for i, d in enumerate(np.repeat(np.linspace(5, 80, 8), per_distance)):
        a = rng.uniform(0, 100, n_levels).round(1)
        v = rng.standard_normal(n_levels)
        b = a + d * v / np.linalg.norm(v)  # at distance d (levels may leave 0-100: DPAM names allow it)
        p = GUESS + (1 - GUESS - LAPSE) / (1 + math.exp(-(np.linalg.norm(b - a) - TRUE_JND) / SCALE))
        clip = f"f1_script{i % 5 + 1}_produced_clipped_{i}.0.wav"
        k = 1 + i % 2
        lines.append(
            f"{kind}_{k}/{'_'.join(f'{v:.4f}' for v in a)}_{clip}\t"
            f"{kind}_{k}/{'_'.join(f'{v:.4f}' for v in b)}_{clip}\t{int(rng.random() < p)}"
        )
    for i in range(n_identical):
        name = f"{kind}_{1 + i % 2}/{'_'.join(['50.0'] * n_levels)}_m2_script1_produced_clipped_{i}.0.wav"
        lines.append(f"{name}\t{name}\t{int(rng.random() < GUESS)}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("kind, n_levels", [("eq", 3), ("combined", 4)])
def test_multilevel_file_jnd_and_false_alarms(tmp_path, kind, n_levels):
    rng = np.random.default_rng(4)
    df = load_multilevel(write_lines(tmp_path / f"dataset_{kind}.txt", kind, rng, n_levels), kind)
    assert len(df) == 8 * 30 + 60 and set(df["set"]) == {1, 2}
    assert len(df["levels_a"].iloc[0]) == n_levels and df["identical"].sum() == 60
    table, binned, fits = distance_tables(df, kind, n_boot=0, rng=rng)
    pooled = table.set_index("base_level").loc["all"]
    assert pooled["estimable"], pooled["reason"]
    # 240 trials over 8 distances: threshold SE ~3 levels; tolerance ~3 SE
    assert abs(pooled["jnd_level"] - TRUE_JND) < 9.0
    assert pooled["jnd_level_ci_low"] <= pooled["jnd_level"] <= pooled["jnd_level_ci_high"]
    assert abs(pooled["guess_rate"] - GUESS) < 0.08
    assert set(table["base_level"]) == {"all", "set 1", "set 2"}
    fa = false_alarm_table(df, "set", kind).set_index("group")
    assert fa.loc["all", "n_identical"] == 60
    assert fa.loc["all", "fa_ci_low"] <= fa.loc["all", "false_alarm_rate"] <= fa.loc["all", "fa_ci_high"]
    assert binned.loc[binned["distance_bin"] == "identical", "n"].item() == 60


def test_wrong_level_count_names_file_and_line(tmp_path):
    f = tmp_path / "dataset_eq.txt"
    f.write_text("eq_1/1_2_3_a.wav\teq_1/1_2_3_a.wav\t0\neq_1/1_2_a.wav\teq_1/1_2_3_a.wav\t1\n")
    with pytest.raises(ValueError, match=r"dataset_eq.txt:2: .*eq_K/L1_L2_L3_clip.wav"):
        load_multilevel(f, "eq")
    with pytest.raises(ValueError, match=r"dataset_eq.txt:1: .*combined_K"):
        load_multilevel(f, "combined")


def test_cli_reads_eq_and_combined(tmp_path, capsys):
    rng = np.random.default_rng(8)
    eq = write_lines(tmp_path / "dataset_eq.txt", "eq", rng, 3)
    comb = write_lines(tmp_path / "dataset_combined.txt", "combined", rng, 4)
    out = tmp_path / "out"
    assert main(["dpam-jnd", "--eq", str(eq), "--combined", str(comb), "--out", str(out), "--n-boot", "0"]) == 0
    text = capsys.readouterr().out
    assert "eq (JND as a distance" in text and "combined (JND as a distance" in text
    assert "inf" not in text and "e-0" not in text
    for name in (
        "dpam_eq_fits.csv",
        "dpam_combined_fits.csv",
        "dpam_false_alarms.csv",
        "dpam_eq.png",
        "dpam_eq.pdf",
        "dpam_combined.png",
    ):
        assert (out / name).is_file(), name
