"""--scheduler: the same job on a Dask distributed cluster gives the same manifest and audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from perturbations.generate import GenerateConfig, GenerateError, generate
from perturbations.generate.runners import DaskRunner

distributed = pytest.importorskip("distributed")


def _corpus(root: Path) -> Path:
    root.mkdir()
    t = np.arange(16000) / 16000
    for i in range(2):
        audio = 0.2 * np.sin(2 * np.pi * (140 + 60 * i) * t) * (1 - np.cos(2 * np.pi * 3 * t)) / 2
        sf.write(str(root / f"clip{i}.wav"), audio.astype(np.float32), 16000, subtype="PCM_16")
    (root / "broken.wav").write_text("not audio")  # skipped on the cluster as it is locally
    return root


def _config(root: Path, out: Path) -> GenerateConfig:
    return GenerateConfig(
        input_dir=root,
        output_dir=out,
        families=("noise", "clipping", "mulaw"),
        levels=(0.0, 40.0, 100.0),
        seed=11,
        code_version="test",
    )


def test_local_cluster_matches_a_local_run(tmp_path):
    root = _corpus(tmp_path / "input")
    local = generate(_config(root, tmp_path / "local"), progress=False, log=lambda _: None)
    # in-process workers keep the test light on a 2-core machine; the tasks still go through
    # the scheduler, serialisation and as_completed like on a real cluster
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        remote = generate(
            _config(root, tmp_path / "dask"), scheduler=cluster.scheduler_address, progress=False, log=lambda _: None
        )
    assert (tmp_path / "dask" / "manifest.csv").read_bytes() == (tmp_path / "local" / "manifest.csv").read_bytes()
    assert remote.num_stimuli == local.num_stimuli == 2 * 3 * 3
    assert [Path(s).name for s, _ in remote.skipped] == ["broken.wav"]
    for wav in (tmp_path / "local").rglob("*.wav"):
        assert wav.read_bytes() == (tmp_path / "dask" / wav.relative_to(tmp_path / "local")).read_bytes()


def test_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(GenerateError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        DaskRunner("tcp://127.0.0.1:9", timeout_s=0.5)
