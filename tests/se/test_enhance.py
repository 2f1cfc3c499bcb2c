"""Enhancement of files and folders: formats kept, chunk joins seamless, no clipping, clear errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf

from se.__main__ import main
from se.enhance import Enhancer, plan_chunks


def _write(path, audio, rate, subtype):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, rate, subtype=subtype)
    return path


@pytest.mark.parametrize("rate, subtype, channels", [(16000, "FLOAT", 1), (22050, "PCM_16", 1), (16000, "PCM_24", 2)])
def test_length_subtype_rate_and_channels_are_kept(tmp_path, make_checkpoint, rate, subtype, channels):
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal((int(0.37 * rate), channels))).astype(np.float32)
    src = _write(tmp_path / "in.wav", audio[:, 0] if channels == 1 else audio, rate, subtype)
    ckpt = make_checkpoint(tmp_path / "se.pt")
    Enhancer.from_checkpoint(ckpt, device="cpu").enhance_file(src, tmp_path / "out.wav")
    a, b = sf.info(str(src)), sf.info(str(tmp_path / "out.wav"))
    assert (b.frames, b.samplerate, b.subtype, b.channels) == (a.frames, a.samplerate, a.subtype, a.channels)


def test_chunk_plan_covers_every_sample_once():
    for n in (1000, 1001, 5000, 12345):
        weight = np.zeros(n)
        for c in plan_chunks(n, 1000, 100, 50):
            assert 0 <= c.start <= c.keep_start < c.keep_stop <= c.stop <= n and c.stop - c.start <= 1000
            w = np.ones(c.keep_stop - c.keep_start)
            if c.fade_in:
                w[: c.fade_in] = np.sin(0.5 * np.pi * (np.arange(c.fade_in) + 0.5) / c.fade_in) ** 2
            if c.fade_out:
                w[-c.fade_out :] = 1 - np.sin(0.5 * np.pi * (np.arange(c.fade_out) + 0.5) / c.fade_out) ** 2
            weight[c.keep_start : c.keep_stop] += w
        assert np.allclose(weight, 1.0)


def test_chunked_equals_unchunked_at_the_joins(make_network):
    net = make_network(n_layers=6)  # receptive field 129 samples
    x = (0.1 * np.random.default_rng(1).standard_normal(16000 // 2)).astype(np.float32)
    whole = Enhancer(net, device="cpu", chunk_s=None).enhance(x, 16000)
    chunked_enhancer = Enhancer(net, device="cpu", chunk_s=0.05, fade_s=0.002)  # 800-sample chunks
    chunks = plan_chunks(len(x), chunked_enhancer.chunk, chunked_enhancer.context, chunked_enhancer.fade)
    assert len(chunks) > 5
    chunked = chunked_enhancer.enhance(x, 16000)
    joins = np.concatenate([np.arange(c.keep_start - 40, c.keep_start + 40) for c in chunks[1:]])
    assert np.max(np.abs(chunked[joins] - whole[joins])) < 1e-5
    assert np.max(np.abs(chunked - whole)) < 1e-5
    with pytest.raises(ValueError, match="too short"):
        Enhancer(net, chunk_s=0.005)


def test_output_never_clips(tmp_path, make_checkpoint, caplog):
    ckpt = make_checkpoint(tmp_path / "loud.pt", scale=500.0)
    src = _write(tmp_path / "in.wav", (0.5 * np.sin(np.arange(4000) / 5)).astype(np.float32), 16000, "PCM_16")
    with caplog.at_level(logging.WARNING, logger="se.enhance"):
        info = Enhancer.from_checkpoint(ckpt, device="cpu").enhance_file(src, tmp_path / "out.wav")
    out, _ = sf.read(str(tmp_path / "out.wav"), dtype="float32")
    assert info["gain_db"] < 0 and np.max(np.abs(out)) <= 1.0
    assert "in.wav" in caplog.text and "no clipping" in caplog.text


def test_bad_files_get_a_clear_error_naming_them(tmp_path, make_checkpoint, capsys):
    ckpt = make_checkpoint(tmp_path / "se.pt")
    folder = tmp_path / "in"
    _write(folder / "good.wav", np.zeros(2000, np.float32), 16000, "PCM_16")
    (folder / "broken.wav").write_bytes(b"RIFF not really a wave file")
    (folder / "empty.wav").write_bytes(b"")
    code = main(["enhance", "--checkpoint", str(ckpt), str(folder), str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert "2 of 3 file(s) failed" in err[0] and "broken.wav: not readable as audio" in err[0]
    assert "empty.wav: file is empty" in err[0]
    assert (tmp_path / "out" / "good.wav").is_file()
    code = main(["enhance", "--checkpoint", str(ckpt), str(folder / "broken.wav"), str(tmp_path / "o.wav")])
    assert code == 1 and "broken.wav: not readable as audio" in capsys.readouterr().err
