"""DPAM human-data analysis: recovery on simulated DPAM-style files, the real files, the CLI."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.dpam_human import false_alarm_table, linear_jnd_table, load_linear, load_reverb, reverb_tables

DPAM_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "dpam"
needs_dpam = pytest.mark.skipif(not DPAM_DIR.is_dir(), reason=f"public DPAM files not found at {DPAM_DIR}")

TRUE_LOG10_RATIO = 1.0  # noise: JND where the second level is 10x the base
TRUE_MP3_KBPS = 40.0  # mp3: threshold bitrate
SLOPE_PER_DECADE = 3.0
GUESS, LAPSE = 0.05, 0.03


def _p(x, thr):
    return GUESS + (1 - GUESS - LAPSE) / (1 + np.exp(-SLOPE_PER_DECADE * (x - thr)))


def write_simulated_linear(path, rng, n_per_level=25, n_identical=40):
    """A dataset_linear-style file (4th column with a leading space) from known observers."""
    lines = []

    def add(a, b, label, family):
        lines.append(
            f"{a:.6g}_f1_script1_produced_clipped_{len(lines)}.0.wav\t"
            f"{b:.6g}_f1_script1_produced_clipped_{len(lines)}.0.wav\t{label}\t {family}"
        )

    for base in (0.002, 0.02, 0.2):
        for r in np.linspace(0.25, 3.0, 8):
            for y in rng.random(n_per_level) < _p(np.log10(base) + r, np.log10(base) + TRUE_LOG10_RATIO):
                add(base, base * 10**r, int(y), "pink_noise")
        for y in rng.random(n_identical) < GUESS:
            name = f"{base:.6g}_f2_script1_produced_clipped_{len(lines)}.0.wav"
            lines.append(f"{name}\t{name}\t{int(y)}\t pink_noise")
    for kbps in np.geomspace(4, 256, 8):
        for y in rng.random(3 * n_per_level) < _p(np.log10(300 / kbps), np.log10(300 / TRUE_MP3_KBPS)):
            add(300, kbps, int(y), "mp3")
    for y in rng.random(n_identical) < GUESS:
        name = f"300_f3_script1_produced_clipped_{len(lines)}.0.wav"
        lines.append(f"{name}\t{name}\t{int(y)}\t mp3")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_recovers_simulated_jnds(tmp_path):
    # 8 levels x 25 trials per base: threshold SE ~0.08 decades; tolerance 0.3 decades
    # (~4 SE). mp3 has 3x the trials: tolerance 0.2 decades around 40 kbps.
    rng = np.random.default_rng(21)
    df = load_linear(write_simulated_linear(tmp_path / "lin.txt", rng))
    assert set(df["family"]) == {"pink_noise", "mp3"}  # leading space stripped
    table, fits = linear_jnd_table(df, n_boot=100, rng=rng)
    noise = table[table["family"] == "pink_noise"]
    assert len(noise) == 3 and noise["estimable"].all(), noise["reason"].tolist()
    assert np.all(np.abs(noise["jnd_log10_ratio"] - TRUE_LOG10_RATIO) < 0.3)
    # jnd_level is the change from the base, in level units
    np.testing.assert_allclose(noise["jnd_level"], noise["threshold_level"] - noise["base_level"])
    assert (noise["jnd_level_ci_low"] < noise["jnd_level"]).all() and (
        noise["jnd_level"] < noise["jnd_level_ci_high"]
    ).all()
    mp3 = table[table["family"] == "mp3"].iloc[0]
    assert mp3["estimable"] and abs(np.log10(mp3["threshold_level"] / TRUE_MP3_KBPS)) < 0.2
    assert mp3["jnd_level"] == pytest.approx(300 - mp3["threshold_level"])
    assert mp3["threshold_level_ci_low"] < mp3["threshold_level"] < mp3["threshold_level_ci_high"]
    # gamma comes from the family's identical pairs
    fa = false_alarm_table(df, "family", "linear").set_index("group")
    assert mp3["guess_rate"] == pytest.approx(fa.loc["mp3", "false_alarm_rate"])


def test_guess_source_choices(tmp_path):
    rng = np.random.default_rng(4)
    df = load_linear(write_simulated_linear(tmp_path / "lin.txt", rng))
    for source in ("base", "joint"):
        table, _ = linear_jnd_table(df, n_boot=0, rng=rng, guess_source=source)
        assert table["estimable"].all()
    with pytest.raises(ValueError, match="guess_source"):
        linear_jnd_table(df, n_boot=0, rng=rng, guess_source="prior")


def test_unparsable_name_reports_file_and_line(tmp_path):
    p = tmp_path / "lin.txt"
    p.write_text("0.02_f1_s.wav\t0.05_f1_s.wav\t1\t crickets\nclean.wav\t0.05_f1_s.wav\t0\t crickets\n")
    with pytest.raises(ValueError, match=f"{p}:2: cannot parse"):
        load_linear(p)


@needs_dpam
def test_real_linear_file_mp3_and_false_alarms():
    df = load_linear(DPAM_DIR / "dataset_linear.txt")
    assert len(df) == 9438 and int(df["identical"].sum()) == 1527
    fa = false_alarm_table(df, "family", "linear").set_index("group")
    assert fa.loc["all", "n_identical"] == 1527 and fa.loc["all", "n_different"] == 61
    # noise families: nine bases on a log grid, second side never below the base
    noise = df[~df["family"].isin(["mp3", "reverb_noise"])]
    assert (noise.groupby("family")["base_level"].nunique() == 9).all()
    assert (noise["level"] >= noise["base_level"]).all()
    mp3 = df[df["family"] == "mp3"]
    table, _ = linear_jnd_table(mp3, n_boot=100, rng=np.random.default_rng(0))
    row = table.iloc[0]
    assert row["estimable"], row["reason"]
    # Sanity bound from the raw proportions: P(different) is < 0.25 above 32 kbps
    # and > 0.65 below 32 kbps, so the halfway point must lie between 16 and 64.
    assert 16 < row["threshold_level"] < 64
    assert row["threshold_level_ci_low"] < row["threshold_level"] < row["threshold_level_ci_high"]


@needs_dpam
def test_real_reverb_file():
    df = load_reverb(DPAM_DIR / "dataset_reverb.txt")
    assert len(df) == 2500
    fits, binned, _ = reverb_tables(df, n_boot=50, rng=np.random.default_rng(1))
    assert fits["estimable"].all()
    assert binned["n"].sum() == 2500
    # P(different) grows with the distance between the two level pairs
    assert binned["p_different"].iloc[-1] > binned["p_different"].iloc[0] + 0.5


def test_cli_writes_tables_and_plots(tmp_path, capsys):
    lin = write_simulated_linear(tmp_path / "lin.txt", np.random.default_rng(8))
    rev = DPAM_DIR / "dataset_reverb.txt"
    args = ["dpam-jnd", "--linear", str(lin), "--out", str(tmp_path / "out"), "--n-boot", "20"]
    if rev.is_file():
        args += ["--reverb", str(rev)]
    assert main(args) == 0
    out = tmp_path / "out"
    table = pd.read_csv(out / "dpam_linear_jnd.csv")
    assert set(table["family"]) == {"pink_noise", "mp3"}
    assert (out / "dpam_pink_noise.png").stat().st_size > 1000
    assert (out / "dpam_mp3.png").is_file() and (out / "dpam_false_alarms.csv").is_file()
    if rev.is_file():
        assert (out / "dpam_reverb.png").is_file() and (out / "dpam_reverb_fits.csv").is_file()
    assert "pink_noise" in capsys.readouterr().out


def test_cli_fails_with_one_line_reason(tmp_path, capsys):
    assert main(["dpam-jnd", "--linear", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")]) == 1
    assert "missing.txt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["no-such-command"])
