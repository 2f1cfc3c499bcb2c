"""Experiment creation refuses, before anything is inserted, every setting and manifest row
that could not work, on SQLite and PostgreSQL alike, with a message naming the setting
(and the ladder) or the manifest row and field: a 422 from POST /admin/api/experiments, a
ClickException (one line, no traceback) from `experiment create`, never a 500.

Kinds (issue 14, breaker findings 1, 2, 3, 5, 6, 10, 11):
- a procedure setting that cannot work on SOME ladder of the set (each is built);
- a setting of the wrong type or out of range (integers are integers, bounded sizes);
- settings that cannot work together (never finish, shrink or estimate);
- manifest rows: non-finite levels, values that do not fit their columns, stimuli not
  sample-aligned with their reference;
- the admin API takes every setting the CLI does and refuses unknown fields.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from flask_migrate import upgrade
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from listening_test.db import db
from listening_test.flow_config import FlowConfig
from listening_test.manifest_import import ManifestError, ladders, read_manifest
from listening_test.models import Experiment
from listening_test.procedures import PROCEDURES, make_procedure
from tests.listening_test.lt_helpers import ADMIN_TOKEN, make_app, pg_app, row_counts
from tests.manifests import ManifestWriter

SR = 16000
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def write_set(
    folder: Path, ladder_levels: dict[tuple[str, str], list[float]], *, n: int = 800, short: set[str] = frozenset()
) -> Path:
    """A stimulus set with the given ladders; clips named in ``short`` are 160 samples shorter."""
    rng = np.random.default_rng(0)
    out = ManifestWriter(folder, SR)
    clean = {}
    for ref, _family in ladder_levels:
        if ref not in clean:
            clean[ref] = 0.1 * rng.standard_normal(n)
            out.add(ref, ref, "reference", 0, clean[ref])
    for (ref, fam), levels in ladder_levels.items():
        for level in levels:
            sid = f"{ref}_{fam}_{level:g}"
            audio = clean[ref] + level / 1000 * rng.standard_normal(n)
            out.add(sid, ref, fam, level, audio[:-160] if sid in short else audio)
    return out.write()


def edit_manifest(manifest: Path, row_index: int, **values) -> Path:
    """Rewrite one data row (0-based) of ``manifest`` with ``values`` (raw CSV strings)."""
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[row_index].update(values)
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


# One ladder of five rungs, another of two: a setting fitting the first may not fit the second.
UNEVEN = {("ref_a", "noise"): [0.0, 25.0, 50.0, 75.0, 100.0], ("ref_b", "noise"): [0.0, 50.0]}
EVEN = {("ref_a", "noise"): [0.0, 25.0, 50.0, 75.0, 100.0], ("ref_b", "noise"): [0.0, 25.0, 50.0, 75.0, 100.0]}


@pytest.fixture(scope="module")
def uneven_set(tmp_path_factory) -> Path:
    return write_set(tmp_path_factory.mktemp("uneven"), UNEVEN)


@pytest.fixture(scope="module")
def even_set(tmp_path_factory) -> Path:
    return write_set(tmp_path_factory.mktemp("even"), EVEN)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_app(request, tmp_path, template_db):
    """An app with a migrated, empty database of the parametrized kind."""
    if request.param == "sqlite":
        path = tmp_path / "jndlab.sqlite"
        shutil.copy(template_db, path)
        app = make_app(f"sqlite:///{path}")
    else:
        app = pg_app(request.getfixturevalue("pg_schema"))
        with app.app_context():
            upgrade()
    yield app
    with app.app_context():
        db.engine.dispose()


def post(app, **body):
    return app.test_client().post("/admin/api/experiments", json=body, headers=AUTH)


def cli(app, *args):
    return app.test_cli_runner().invoke(args=["experiment", "create", *args])


def assert_refused(app, manifest: Path, expected: list[str], *, cli_args=(), **body):
    """The API answers 422 and the CLI exits with one error line, both naming ``expected``;
    nothing is stored."""
    before = row_counts(app)
    reply = post(app, manifest=str(manifest), **body)
    assert reply.status_code == 422, reply.get_json()
    message = reply.get_json()["error"]["message"]
    for word in expected:
        assert word in message, (word, message)
    if cli_args is not None:
        result = cli(app, "--manifest", str(manifest), *cli_args)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        for word in expected:
            assert word in result.output, (word, result.output)
    assert row_counts(app) == before
    return reply.get_json()["error"]


# --- 1: every ladder is checked ---------------------------------------------------------


@pytest.mark.parametrize(
    "procedure,config,expected",
    [
        ("binary_search", {}, ["ref_b", "binary_search needs at least 3 levels"]),
        ("staircase", {"start_level": 75}, ["ref_b", "start_level"]),
        ("staircase", {"steps": [3, 1], "shrink_at": [2]}, ["ref_b", "steps[0]"]),
        ("bayesian", {"threshold_range": [60, 100]}, ["ref_b", "threshold_range"]),
    ],
)
def test_a_setting_that_fails_on_one_ladder_is_refused_naming_it(empty_app, uneven_set, procedure, config, expected):
    args = ["--procedure", procedure, "--procedure-config", json.dumps(config)]
    assert_refused(empty_app, uneven_set, expected, cli_args=args, procedure=procedure, procedure_config=config)
    # the same settings on a set whose every ladder fits them are accepted
    assert post(empty_app, manifest=str(uneven_set), procedure="staircase", name="fits").status_code == 201


# --- 2 and 3: types, ranges, combinations ------------------------------------------------

BAD_PROCEDURE_CONFIGS = [
    ("staircase", {"steps": 3}, "steps"),
    ("staircase", {"shrink_at": None}, "shrink_at"),
    ("staircase", {"start_level": [1]}, "start_level"),
    ("staircase", {"start_level": "abc"}, "start_level"),
    ("staircase", {"n_down": 2.0}, "n_down"),
    ("staircase", {"max_reversals": None, "max_trials": 10, "shrink_at": [50, 100]}, "shrink_at[0]"),
    ("staircase", {"estimate_reversals": 6, "max_trials": 5}, "estimate_reversals"),
    ("staircase", {"n_down": 200, "max_trials": 80}, "n_down"),
    ("staircase", {"n_down": 9, "max_trials": 9}, "max_trials"),
    ("staircase", {"steps": [100, 50, 1]}, "steps[0]"),
    ("staircase", {"max_trials": 1}, "max_trials"),
    ("staircase", {"max_trials": True}, "max_trials"),
    ("bayesian", {"threshold_range": 5}, "threshold_range"),
    ("bayesian", {"threshold_range": [1, 2, 3]}, "threshold_range"),
    ("bayesian", {"threshold_range": [1000, 2000]}, "threshold_range"),
    ("bayesian", {"lapse_rates": 5}, "lapse_rates"),
    ("bayesian", {"lapse_rates": [None]}, "lapse_rates[0]"),
    ("bayesian", {"target_sd": [1]}, "target_sd"),
    ("bayesian", {"target_sd": "x"}, "target_sd"),
    ("bayesian", {"n_thresholds": 10**12}, "n_thresholds"),
    ("bayesian", {"n_thresholds": 1001, "n_slopes": 200}, "grid too large"),
    ("bayesian", {"n_thresholds": 1001, "n_slopes": 20, "max_trials": 2000}, "max_trials=2000"),
    ("bayesian", {"min_trials": 0, "target_sd": 1000}, "target_sd"),
    ("bayesian", {"function": ["logistic"]}, "function"),
    ("binary_search", {"repeats": 101, "max_trials": 50}, "repeats"),
    ("binary_search", {"repeats": 51, "max_trials": 50}, "max_trials"),
    ("binary_search", {"passes": 3, "max_trials": 1}, "max_trials"),
    ("binary_search", {"passes": 2.5}, "passes"),
]
BAD_FLOW_CONFIGS = [
    ({"references_per_participant": "2"}, "references_per_participant"),
    ({"references_per_participant": 2.0}, "references_per_participant"),
    ({"catch_rate": "x"}, "catch_rate"),
    ({"catch_rate": math.nan}, "catch_rate"),
    ({"screening": None}, None),  # null is allowed: the default screening
    ({"screening": {"tests": None}}, "screening.tests"),
    ({"screening": {"tests": 5}}, "screening.tests"),
    ({"screening": {"tests": "huggins"}}, "screening.tests"),
    ({"screening": {"tests": ["huggins", "huggins"]}}, "screening.tests"),
    ({"screening": {"trials_per_test": [1]}}, "screening.trials_per_test"),
    ({"screening": {"trials_per_test": 2.9}}, "screening.trials_per_test"),
    ({"screening": {"trials_per_test": 10**9}}, "screening.trials_per_test"),
    ({"screening": {"rules": "all"}}, "rules"),
    ({"screening": "abc"}, "screening"),
    ({"practice_trials": 10**9}, "practice_trials"),
    ({"practice_trials": 2.5}, "practice_trials"),
    ({"max_main_trials": True}, "max_main_trials"),
    ({"max_main_trials": 1}, "max_main_trials"),
    ({"require_full_playback": "no"}, "require_full_playback"),
    ({"families_per_participant": 0}, "families_per_participant"),
    ({"anchor_system": 5}, "anchor_system"),
    ({"bogus": 1}, "bogus"),
]


@pytest.mark.parametrize("procedure,config,setting", BAD_PROCEDURE_CONFIGS)
def test_bad_procedure_settings_are_refused_naming_the_setting(procedure, config, setting):
    with pytest.raises(ValueError, match=f"procedure_config for {procedure} on ladder .*{_re(setting)}"):
        FlowConfig.from_dict({}).validate_for(procedure, config, EVEN, "same_different")


@pytest.mark.parametrize("config,setting", BAD_FLOW_CONFIGS)
def test_bad_flow_settings_are_refused_naming_the_setting(config, setting):
    if setting is None:
        FlowConfig.from_dict(config).validate_for("bayesian", {}, EVEN, "same_different")
        return
    with pytest.raises(ValueError, match=_re(setting)):
        FlowConfig.from_dict(config).validate_for("bayesian", {}, EVEN, "same_different")


def _re(text: str) -> str:
    import re

    return re.escape(text)


def test_bad_settings_over_the_api_and_cli_are_4xx_naming_them(empty_app, even_set):
    for procedure, config, setting in BAD_PROCEDURE_CONFIGS[::3]:
        assert_refused(
            empty_app,
            even_set,
            [setting],
            procedure=procedure,
            procedure_config=config,
            cli_args=["--procedure", procedure, "--procedure-config", json.dumps(config)],
        )
    for config, setting in BAD_FLOW_CONFIGS[::3]:
        if setting is not None and "nan" not in repr(config):
            assert_refused(empty_app, even_set, [setting], config=config, cli_args=["--config", json.dumps(config)])


def test_a_restored_track_keeps_working_with_defaults_a_short_cap_never_reaches():
    # Defaults (estimate_reversals 6, shrink_at [2, 4], steps [4, 2, 1]) on a 4-trial cap and a
    # 3-rung ladder are "at most": accepted when given implicitly, and restored as stored.
    proc = make_procedure("staircase", [0.0, 50.0, 100.0], max_trials=4, max_reversals=None)
    proc.update(proc.next_level(), False)
    again = type(proc).from_state(json.loads(json.dumps(proc.state_dict())))
    assert again.state_dict() == proc.state_dict()
    with pytest.raises(ValueError, match="estimate_reversals=6 can never be reached within max_trials=4"):
        make_procedure("staircase", [0.0, 50.0, 100.0], max_trials=4, max_reversals=None, estimate_reversals=6)


# --- Hypothesis: every value is accepted and works, or is a ValueError -----------------

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**13), 10**13),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8,
)


def _small(key: str) -> st.SearchStrategy:
    """Values near each setting's working range, mixed with arbitrary JSON."""
    near = st.one_of(
        st.integers(-2, 120),
        st.floats(-5, 120),
        st.lists(st.integers(-2, 60), max_size=4),
        st.lists(st.floats(0, 0.6), max_size=4),
        st.sampled_from(["logistic", "weibull", "mean", "mode", "threshold", "threshold_slope"]),
    )
    return st.one_of(near, JSON_VALUES)


@st.composite
def procedure_settings(draw):
    name = draw(st.sampled_from(sorted(PROCEDURES)))
    keys = draw(st.sets(st.sampled_from(sorted(PROCEDURES[name].defaults) + ["bogus"]), max_size=4))
    return name, {k: draw(_small(k)) for k in sorted(keys)}


def _run_to_the_end(proc, rng) -> None:
    """Random answers until the track finishes; it must finish within its bound."""
    bound = getattr(proc, "trial_bound", None) or 20_000
    for _ in range(bound):
        level = proc.next_level()
        if level is None:
            break
        proc.update(level, bool(rng.integers(2)))
    assert proc.finished and proc.next_level() is None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(procedure_settings(), st.integers(0, 2**32 - 1))
def test_any_procedure_setting_is_refused_by_name_or_works_on_every_ladder(drawn, seed):
    name, config = drawn
    try:
        FlowConfig.from_dict({}).validate_for(name, config, UNEVEN, "same_different")
    except ValueError as error:
        assert f"procedure_config for {name} on ladder reference=" in str(error) or "max_main_trials" in str(error)
        return
    for levels in UNEVEN.values():  # accepted: every ladder's track runs to its end
        proc = make_procedure(name, levels, **config)
        if name == "bayesian" and proc.config["max_trials"] > 40:
            continue  # a long Psi track is slow; its construction is what is checked here
        _run_to_the_end(proc, np.random.default_rng(seed))


@st.composite
def flow_settings(draw):
    keys = draw(st.sets(st.sampled_from(sorted(FlowConfig.__dataclass_fields__) + ["bogus"]), max_size=4))
    out = {k: draw(_small(k)) for k in sorted(keys)}
    if "screening" in out and draw(st.booleans()):
        skeys = draw(st.sets(st.sampled_from(["tests", "trials_per_test", "min_correct", "rule", "x"]), max_size=3))
        out["screening"] = {
            k: draw(st.one_of(_small(k), st.lists(st.sampled_from(["huggins", "antiphase"]), max_size=3)))
            for k in sorted(skeys)
        }
    return out


@settings(max_examples=200, deadline=None)
@given(flow_settings())
def test_any_flow_setting_is_refused_by_name_or_accepted(config):
    try:
        flow = FlowConfig.from_dict(config)
        flow.validate_for("staircase", {}, EVEN, "same_different")
    except ValueError as error:
        text = str(error)
        assert any(key in text for key in (*FlowConfig.__dataclass_fields__, "bogus", "flow config")), text
        return
    assert isinstance(flow.require_full_playback, bool)
    assert flow.practice_trials <= 100 and flow.screening.trials_per_test <= 50
    assert len(set(flow.screening.tests)) == len(flow.screening.tests)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(procedure_settings(), flow_settings())
def test_any_setting_over_the_api_is_201_or_4xx(empty_app, even_set, drawn, flow):
    name, config = drawn
    reply = post(
        empty_app,
        manifest=str(even_set),
        procedure=name,
        procedure_config=config,
        config=flow,
        name=f"hypothesis-{next(_NAMES)}",
    )
    assert reply.status_code in (201, 400, 422), reply.get_data(as_text=True)[:500]
    if reply.status_code == 422:
        assert reply.get_json()["error"]["code"] == "invalid_experiment"
    elif reply.status_code == 400:  # NaN / Infinity in the body: not JSON (security.json_body)
        assert reply.get_json()["error"]["code"] == "malformed_json"
        assert any(isinstance(v, float) and not math.isfinite(v) for v in _leaves([config, flow]))


_NAMES = itertools.count()


def _leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


# --- 5 (import), 6, 10: manifest rows -------------------------------------------------------


@pytest.mark.parametrize(
    "row,values,field",
    [
        (1, {"level": "nan"}, "level"),
        (1, {"level": "inf"}, "level"),
        (1, {"level": "-Infinity"}, "level"),
        (1, {"family": "f" * 65}, "family"),
        (1, {"stimulus_id": "s" * 201}, "stimulus_id"),
        (1, {"reference": "r" * 201}, "reference"),
        (1, {"sha256": "a" * 65}, "sha256"),
        (1, {"sha256": "z" * 64}, "sha256"),
        (1, {"params": '{"x": NaN}'}, "params"),
        (1, {"params": '{"x": Infinity}'}, "params"),
        (1, {"sample_rate": str(2**31)}, "sample_rate"),
        (1, {"seed": str(2**63)}, "seed"),
        (0, {"stimulus_id": "ref_a\x00"}, "stimulus_id"),
    ],
)
def test_a_bad_row_is_refused_naming_its_line_and_field(empty_app, tmp_path, row, values, field):
    manifest = edit_manifest(write_set(tmp_path, EVEN), row, **values)
    error = assert_refused(empty_app, manifest, [f"line {row + 2}", repr(field)], cli_args=[], procedure="staircase")
    assert error["line"] == row + 2 and error["field"] == field


def test_a_stimulus_not_sample_aligned_with_its_reference_is_refused(empty_app, tmp_path):
    manifest = write_set(tmp_path, EVEN, short={"ref_b_noise_50"})  # file, num_samples and sha256 agree
    error = assert_refused(empty_app, manifest, ["'num_samples'", "ref_b_noise_50", "sample-aligned"], cli_args=[])
    assert error["field"] == "num_samples"
    # the same with a different sample rate (the file's rate agrees with its row)
    rows = read_manifest(write_set(tmp_path / "rate", EVEN), check_files=False)
    assert all(r.num_samples == rows[0].num_samples for r in rows)
    other = tmp_path / "rate" / "manifest.csv"
    import soundfile as sf

    audio, _ = sf.read(tmp_path / "rate" / "audio" / "ref_a_noise_25.wav")
    sf.write(tmp_path / "rate" / "audio" / "ref_a_noise_25.wav", audio, 8000, subtype="FLOAT")
    import hashlib

    digest = hashlib.sha256((tmp_path / "rate" / "audio" / "ref_a_noise_25.wav").read_bytes()).hexdigest()
    index = [r.stimulus_id for r in rows].index("ref_a_noise_25")
    edit_manifest(other, index, sample_rate="8000", sha256=digest)
    error = assert_refused(empty_app, other, ["'sample_rate'", "ref_a_noise_25"], cli_args=None)
    assert error["field"] == "sample_rate"


def test_the_manifest_reader_refuses_what_does_not_fit_with_a_manifest_error(tmp_path):
    manifest = write_set(tmp_path, EVEN)
    with pytest.raises(ManifestError, match="line 4, column 'level'"):
        read_manifest(edit_manifest(manifest, 2, level="NaN"))
    assert ladders(read_manifest(write_set(tmp_path / "ok", EVEN))) == EVEN


# --- 10 (settings), 11: the API takes what the CLI takes ------------------------------------


@pytest.mark.parametrize(
    "body,cli_args,field",
    [
        ({"target_participants": 3_000_000_000}, ["--target-participants", "3000000000"], "target_participants"),
        (
            {"prolific_completion_code": "C" * 100},
            ["--prolific-completion-code", "C" * 100],
            "prolific_completion_code",
        ),
        (
            {"prolific_screened_out_code": "S" * 65},
            ["--prolific-screened-out-code", "S" * 65],
            "prolific_screened_out_code",
        ),
        ({"name": "n" * 250}, ["--name", "n" * 250], "name"),
        ({"reward_cents": 2**31}, ["--reward-cents", str(2**31)], "reward_cents"),
        ({"target_judgments": 2**31}, ["--target-judgments", str(2**31)], "target_judgments"),
        ({"max_sessions_per_worker": 1001}, ["--sessions-per-worker", "1001"], "max_sessions_per_worker"),
        ({"mturk_environment": "live"}, None, "mturk_environment"),
    ],
)
def test_settings_that_do_not_fit_their_columns_are_refused(empty_app, even_set, body, cli_args, field):
    assert_refused(empty_app, even_set, [field], cli_args=cli_args, **body)


def test_the_api_stores_every_setting_the_cli_takes_and_refuses_unknown_fields(empty_app, even_set):
    reply = post(
        empty_app,
        manifest=str(even_set),
        name="turk",
        mturk_environment="sandbox",
        max_sessions_per_worker=3,
        verify_hashes=True,
    )
    assert reply.status_code == 201, reply.get_json()
    summary = reply.get_json()["experiment"]
    assert summary["mturk_environment"] == "sandbox" and summary["max_sessions_per_worker"] == 3
    reply = post(empty_app, manifest=str(even_set), name="open", max_sessions_per_worker="unlimited")
    assert reply.status_code == 201 and reply.get_json()["experiment"]["max_sessions_per_worker"] is None
    with empty_app.app_context():
        stored = {
            e.slug: (e.mturk_environment, e.max_sessions_per_worker) for e in db.session.scalars(select(Experiment))
        }
    assert stored == {"turk": ("sandbox", 3), "open": (None, None)}
    before = row_counts(empty_app)
    reply = post(empty_app, manifest=str(even_set), name="x", max_sessions=3, mturk_env="sandbox")
    assert reply.status_code == 422
    error = reply.get_json()["error"]
    assert error["code"] == "unknown_fields" and set(error["fields"]) == {"max_sessions", "mturk_env"}
    reply = post(empty_app, manifest=str(even_set), name="x", max_sessions_per_worker="many")
    assert reply.status_code == 422 and "max_sessions_per_worker" in reply.get_json()["error"]["fields"]
    assert row_counts(empty_app) == before
