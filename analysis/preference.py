"""A/B preference studies: which of two systems' outputs do listeners find closer to clean?

Reads an ``ab_preference`` experiment of a listening-test database (SELECT only; the
storage contract: ``experiments.test_type = "ab_preference"``, one trial per judgment
with ``spec = {"systems": [system_A, system_B], "stimuli": [...]}``, answers "A"/"B")
and summarises it per system pair:

- the pooled share of judgments preferring one system, with the exact Clopper-Pearson
  CI and a two-sided binomial test of "no preference" (``analysis.pairwise``);
- because pooled judgments are not independent (every listener judges many items and
  every item is judged by many listeners), three cluster-aware views as well: the share
  of items whose majority prefers the system, the share of listeners whose majority does
  (both with Clopper-Pearson CIs), and a percentile bootstrap CI of the pooled share
  that resamples listeners (seeded);
- position bias: the share of answers "A";
- a per-item and a per-listener table;
- with more than two systems, a Bradley-Terry model over every pair at once
  (``bradley_terry``: choix's maximum-likelihood fit, log-strengths centred on 0,
  percentile intervals from a bootstrap that resamples whole listeners) and a ranking
  plot.

Workers are screened first: sessions that failed the headphone screen are dropped,
workers whose accuracy on catch trials (the clean reference against the anchor, kind
``catch_anchor``) is below a threshold are excluded (workers without catch trials are
kept and flagged), and optionally so are workers who skipped playback (a main trial with
a clip played 0 times). ``write_preference_report`` writes the tables, plots, JSON and
an HTML page; ``python -m analysis preference`` is its command line.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from listening_test import judgments_query
from perturbations.files import atomic_write_text

from .judgments import (
    JudgmentsError,
    _canonical_json,
    _utc_iso,
    write_tidy_csv,
)
from .pairwise import (
    BootstrapInterval,
    PreferenceResult,
    cluster_bootstrap_share,
    preference_share,
)

TEST_TYPE = "ab_preference"
CATCH_KIND = "catch_anchor"
ANSWERS = ("A", "B")

AB_COLUMNS = [
    "experiment_id", "experiment", "participant_id", "platform", "worker_id", "worker",
    "session", "session_stage", "screening_passed",
    "trial_id", "trial_index", "kind", "pair", "item", "system_a", "system_b", "stimulus_a", "stimulus_b",
    "answer", "preferred", "expected_answer", "is_correct",
    "response_time_ms", "play_counts", "plays_reference", "plays_a", "plays_b", "skipped_playback",
    "served_at", "answered_at",
]


# ----------------------------------------------------------------------------- loading


def as_database_url(db: str | os.PathLike | None) -> str:
    """A SQLAlchemy URL as given, a plain path as a SQLite URL, None as ``resolve_database_url``."""
    return judgments_query.database_url(db)


def _pick_experiment(source: str, experiments: list, experiment: str | None):
    """The (id, slug, test_type) row of the requested ab_preference experiment, or a clear error."""
    known = ", ".join(f"{slug} ({test_type})" for _, slug, test_type in experiments) or "none"
    if experiment is None:
        ab = [e for e in experiments if e[2] == TEST_TYPE]
        if len(ab) == 1:
            return ab[0]
        why = "no ab_preference experiment" if not ab else "several ab_preference experiments; name one"
        raise JudgmentsError(f"{source}: {why} (experiments: {known})")
    match = [e for e in experiments if e[1] == str(experiment) or str(e[0]) == str(experiment)]
    if not match:
        raise JudgmentsError(f"{source}: no experiment {str(experiment)!r} (experiments: {known})")
    if match[0][2] != TEST_TYPE:
        raise JudgmentsError(
            f"{source}: experiment {match[0][1]!r} is a {match[0][2]} test, not {TEST_TYPE} "
            "(its judgments are analysed by `python -m analysis report`)")
    return match[0]


def _fetch(url: str, experiment: str | None):
    """Raw rows of one A/B experiment (``listening_test.judgments_query``; one read-only snapshot)."""
    with judgments_query.read_only(url) as conn:
        experiments = [(e["id"], e["slug"], e["test_type"]) for e in judgments_query.experiments(conn)]
        exp_id, slug, _ = _pick_experiment(judgments_query.display_url(url), experiments, experiment)
        stimuli = judgments_query.stimulus_ids(conn, exp_id)
        rows = judgments_query.judgment_rows(conn, experiment_id=exp_id)
    return (exp_id, slug), stimuli, rows


def _row(r: dict, exp_id: int, slug: str, stimuli: dict[int, str]) -> dict:
    spec = r["trial_spec"] if isinstance(r["trial_spec"], dict) else {}
    systems = list(spec.get("systems") or [])
    ids = list(spec.get("stimuli") or [])
    system_a, system_b = (systems + [None, None])[:2]
    stim_a = stimuli.get(ids[0]) if len(ids) > 0 else stimuli.get(r["test_stimulus_id"])
    stim_b = stimuli.get(ids[1]) if len(ids) > 1 else None
    answer = r["answer"]
    preferred = {"A": system_a, "B": system_b}.get(answer) if len(systems) == 2 else None
    pair = r["family"] or ("|".join(sorted(systems)) if len(systems) == 2 else None)
    plays = [int(p) for p in (r["play_counts"] or [])]
    # A/B slots: 0 = the clean reference, 1 = clip A, 2 = clip B (screening trials have intervals 1-3)
    slot = (lambda i: plays[i] if len(plays) == 3 and r["kind"] != "screening" else None)
    is_correct = r["is_correct"]
    if is_correct is None and r["expected_answer"] in ANSWERS and answer in ANSWERS:
        is_correct = answer == r["expected_answer"]
    return {
        "experiment_id": exp_id, "experiment": slug, "participant_id": r["participant_id"],
        "platform": r["platform"], "worker_id": r["worker_id"], "worker": f"{r['platform']}:{r['worker_id']}",
        "session": r["session"], "session_stage": r["session_stage"], "screening_passed": r["screening_passed"],
        "trial_id": r["trial_id"], "trial_index": r["trial_index"], "kind": r["kind"], "pair": pair,
        "item": r["reference"], "system_a": system_a, "system_b": system_b, "stimulus_a": stim_a, "stimulus_b": stim_b,
        "answer": answer, "preferred": preferred, "expected_answer": r["expected_answer"], "is_correct": is_correct,
        "response_time_ms": r["response_time_ms"], "play_counts": _canonical_json(plays),
        "plays_reference": slot(0), "plays_a": slot(1), "plays_b": slot(2),
        "skipped_playback": (min(plays) == 0) if plays else None,
        "served_at": _utc_iso(r["served_at"]), "answered_at": _utc_iso(r["answered_at"]),
    }


def tidy_ab(rows: list[dict], exp_id: int, slug: str, stimuli: dict[int, str]) -> pd.DataFrame:
    """Raw joined rows as the tidy A/B table (pure; one row per answered trial, every kind)."""
    df = pd.DataFrame.from_records([_row(r, exp_id, slug, stimuli) for r in rows], columns=AB_COLUMNS)
    for col in ("experiment_id", "participant_id", "trial_id", "trial_index", "response_time_ms",
                "plays_reference", "plays_a", "plays_b"):
        df[col] = pd.array([None if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)
                            for v in df[col]], dtype="Int64")
    for col in ("screening_passed", "is_correct", "skipped_playback"):
        df[col] = pd.array([None if v is None or (isinstance(v, float) and math.isnan(v)) else bool(v)
                            for v in df[col]], dtype="boolean")
    return df.reset_index(drop=True)


def load_ab_judgments(db: str | os.PathLike | None = None, *, experiment: str | None = None,
                      require_main: bool = True) -> pd.DataFrame:
    """Every answered trial of one ``ab_preference`` experiment as a tidy table (``AB_COLUMNS``).

    ``db``: a SQLAlchemy URL (SQLite, PostgreSQL) or the path of a SQLite file; None reads
    ``DATABASE_URL``. ``experiment``: slug or id; None picks the database's only A/B
    experiment. Raises ``JudgmentsError`` naming the database and the problem: no such file,
    not a jndlab database, no such experiment, not an A/B experiment, no answered main
    trials yet (unless ``require_main`` is False).
    """
    url = as_database_url(db)
    (exp_id, slug), stimuli, rows = _fetch(url, experiment)
    df = tidy_ab(rows, exp_id, slug, stimuli)
    source = judgments_query.display_url(url)
    if require_main and not (df["kind"] == "main").any():
        counts = ", ".join(f"{k}: {n}" for k, n in df["kind"].value_counts().sort_index().items())
        raise JudgmentsError(f"{source}: experiment {slug!r} has no answered main trials yet "
                             f"({'answered: ' + counts if counts else 'no answered trials at all'})")
    df.attrs["database_url"] = source
    return df


# ----------------------------------------------------------------------------- screening


@dataclass(frozen=True)
class ABScreeningRules:
    """Who is left out. ``min_catch_accuracy = None`` switches the catch rule off."""

    min_catch_accuracy: float | None = 0.8     # correct / catch_anchor trials
    require_headphone_screen: bool = True      # drop sessions that failed the headphone screen
    exclude_skipped_playback: bool = False     # exclude workers with a main trial where a clip was played 0 times

    def __post_init__(self):
        v = self.min_catch_accuracy
        if v is not None and not 0.0 <= v <= 1.0:
            raise ValueError(f"min_catch_accuracy must be in [0, 1] or None, got {v!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def _failed_screen(df: pd.DataFrame) -> np.ndarray:
    return df["screening_passed"].eq(False).fillna(False).to_numpy(bool)


def screen_ab_workers(df: pd.DataFrame, rules: ABScreeningRules | None = None) -> pd.DataFrame:
    """One row per worker: catch accuracy, skipped playback, headphone sessions, excluded and why.

    ``reasons`` lists what excludes the worker; ``flags`` what is worth knowing but does not
    (no catch trials, skipped playback when that rule is off, some sessions dropped).
    """
    rules = rules or ABScreeningRules()
    records = []
    for worker, g in df.groupby("worker", sort=True):
        failed = _failed_screen(g)
        sessions = g["session"].nunique()
        failed_sessions = g.loc[failed, "session"].nunique()
        # statistics on the sessions that count; on all of them when none does (for the record)
        kept = g[~failed] if rules.require_headphone_screen and not failed.all() else g
        main = kept[kept["kind"] == "main"]
        catch = kept[kept["kind"] == CATCH_KIND]
        n_catch = len(catch)
        n_correct = int(catch["is_correct"].fillna(False).astype(bool).sum())
        accuracy = n_correct / n_catch if n_catch else math.nan
        skipped = int(main["skipped_playback"].fillna(False).astype(bool).sum())
        answered_ab = main["answer"].isin(ANSWERS)
        reasons, flags = [], []
        if rules.require_headphone_screen and failed_sessions:
            if failed_sessions == sessions:
                reasons.append("failed the headphone screen")
            else:
                flags.append(f"{failed_sessions} of {sessions} sessions failed the headphone screen (dropped)")
        if n_catch == 0:
            flags.append("no catch trials (catch rule not applied)")
        elif rules.min_catch_accuracy is not None and accuracy < rules.min_catch_accuracy:
            reasons.append(f"catch accuracy {accuracy:.2f} ({n_correct}/{n_catch}) < {rules.min_catch_accuracy:g}")
        if skipped:
            text = f"skipped playback on {skipped} of {len(main)} main trials"
            (reasons if rules.exclude_skipped_playback else flags).append(text)
        rt = pd.to_numeric(main["response_time_ms"], errors="coerce").dropna()
        records.append({
            "worker": worker, "platform": g["platform"].iloc[0], "worker_id": g["worker_id"].iloc[0],
            "n_sessions": sessions, "n_sessions_failed_screen": failed_sessions,
            "n_main": len(main), "n_catch": n_catch, "n_catch_correct": n_correct, "catch_accuracy": accuracy,
            "n_skipped_playback": skipped,
            "share_answer_a": float((main.loc[answered_ab, "answer"] == "A").mean()) if answered_ab.any() else math.nan,
            "median_rt_ms": float(rt.median()) if len(rt) else math.nan,
            "excluded": bool(reasons), "reasons": "; ".join(reasons), "flags": "; ".join(flags),
        })
    columns = ["worker", "platform", "worker_id", "n_sessions", "n_sessions_failed_screen", "n_main", "n_catch",
               "n_catch_correct", "catch_accuracy", "n_skipped_playback", "share_answer_a", "median_rt_ms",
               "excluded", "reasons", "flags"]
    return pd.DataFrame.from_records(records, columns=columns)


def included_ab_judgments(df: pd.DataFrame, rules: ABScreeningRules | None = None,
                          workers: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rows of included workers, without sessions that failed the headphone screen."""
    rules = rules or ABScreeningRules()
    workers = screen_ab_workers(df, rules) if workers is None else workers
    excluded = set(workers.loc[workers["excluded"], "worker"])
    keep = ~df["worker"].isin(excluded).to_numpy(bool)
    if rules.require_headphone_screen:
        keep &= ~_failed_screen(df)
    return df[keep]


# ----------------------------------------------------------------------------- summaries


def _majority(preferred: pd.Series, system: str, other: str) -> str:
    wins, n = int((preferred == system).sum()), len(preferred)
    return system if 2 * wins > n else other if 2 * wins < n else "tie"


def _fmt_p(p: float) -> str:
    if p >= 0.001:
        return f"{p:.2g}"
    mantissa, exponent = f"{p:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _ci(r: PreferenceResult) -> str:
    return f"{r.share:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"


@dataclass(frozen=True)
class PairSummary:
    """One system pair. Every share is that of ``system`` (the pooled winner) over ``other``."""

    pair: str                             # "<sysX>|<sysY>", names sorted
    system: str
    other: str
    pooled: PreferenceResult              # every judgment, as if independent
    by_item: PreferenceResult             # each item's majority (split items are ties)
    by_listener: PreferenceResult         # each listener's majority
    listener_bootstrap: BootstrapInterval  # pooled share, listeners resampled
    position: PreferenceResult            # share of answers "A" (system "A" over "B")
    n_items: int
    n_listeners: int

    def describe(self) -> str:
        p = self.pooled
        if p.n == 0:
            return f"{self.pair}: no main judgments from included workers"
        conf = f"{100 * p.confidence:g}%"
        parts = [f"{self.system} preferred over {self.other} in {p.wins}/{p.n} judgments: {_ci(p)} "
                 f"(Clopper-Pearson {conf}), p = {_fmt_p(p.p_value)}"]
        for name, r in (("by item", self.by_item), ("by listener", self.by_listener)):
            if r.n:
                parts.append(f"{name} {r.wins}/{r.n}: {_ci(r)}" + (f", {r.ties} split" if r.ties else ""))
        b = self.listener_bootstrap
        if not math.isnan(b.ci_low):
            parts.append(f"listener bootstrap {conf} [{b.ci_low:.3f}, {b.ci_high:.3f}]")
        if self.position.n:
            parts.append(f"A chosen in {self.position.wins}/{self.position.n} ({_ci(self.position)})")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {"pair": self.pair, "system": self.system, "other": self.other, "n_items": self.n_items,
                "n_listeners": self.n_listeners, "pooled": _clean(self.pooled.to_dict()),
                "by_item": _clean(self.by_item.to_dict()), "by_listener": _clean(self.by_listener.to_dict()),
                "listener_bootstrap": self.listener_bootstrap.to_dict(),
                "position_a": _clean(self.position.to_dict()), "summary": self.describe()}


def _clean(d: dict) -> dict:
    """NaN -> None, for strict JSON."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def _orient(pair: str, main: pd.DataFrame) -> tuple[str, str]:
    """(system, other): the pooled winner first; on a tie (or no data) the sorted order."""
    x, y = (pair.split("|", 1) + [""])[:2]
    wins_x, wins_y = int((main["preferred"] == x).sum()), int((main["preferred"] == y).sum())
    return (y, x) if wins_y > wins_x else (x, y)


def summarize_pair(pair: str, main: pd.DataFrame, *, n_boot: int = 2000, seed: int | None = 0,
                   confidence: float = 0.95) -> PairSummary:
    """The summaries of one pair from its main-trial rows (only rows naming one of its systems count)."""
    system, other = _orient(pair, main)
    rows = main[main["preferred"].isin([system, other])]
    pooled = preference_share(rows["preferred"], system, other, confidence)
    items = [_majority(g, system, other) for _, g in rows.groupby("item", sort=True)["preferred"]]
    by_worker = rows.groupby("worker", sort=True)["preferred"]
    listeners = [_majority(g, system, other) for _, g in by_worker]
    wins = by_worker.apply(lambda s: int((s == system).sum())).to_numpy(int) if len(rows) else np.zeros(0, int)
    sizes = by_worker.size().to_numpy(int) if len(rows) else np.zeros(0, int)
    position = preference_share(rows.loc[rows["answer"].isin(ANSWERS), "answer"], "A", "B", confidence)
    return PairSummary(pair, system, other, pooled,
                       preference_share(items, system, other, confidence),
                       preference_share(listeners, system, other, confidence),
                       cluster_bootstrap_share(wins, sizes, n_boot=n_boot, seed=seed, confidence=confidence),
                       position, len(items), len(listeners))


def cluster_table(main: pd.DataFrame, pairs: list[PairSummary], by: str, confidence: float = 0.95) -> pd.DataFrame:
    """Wins and losses per ``by`` ("item" or "worker") within each pair, with Clopper-Pearson CIs."""
    records = []
    for s in pairs:
        rows = main[(main["pair"] == s.pair) & main["preferred"].isin([s.system, s.other])]
        for key, g in rows.groupby(by, sort=True):
            r = preference_share(g["preferred"], s.system, s.other, confidence)
            records.append({by: key, "pair": s.pair, "system": s.system, "other": s.other, "wins": r.wins,
                            "losses": r.losses, "n": r.n, "share": r.share, "ci_low": r.ci_low,
                            "ci_high": r.ci_high, "majority": _majority(g["preferred"], s.system, s.other),
                            ("n_listeners" if by == "item" else "n_items"):
                                g["worker" if by == "item" else "item"].nunique()})
    columns = [by, "pair", "system", "other", "wins", "losses", "n", "share", "ci_low", "ci_high", "majority",
               "n_listeners" if by == "item" else "n_items"]
    return pd.DataFrame.from_records(records, columns=columns)


# ----------------------------------------------------------------------------- Bradley-Terry


def bradley_terry(main: pd.DataFrame, *, n_boot: int = 2000, seed: int | None = 0, confidence: float = 0.95,
                  alpha: float = 1e-3) -> pd.DataFrame:
    """Bradley-Terry strengths of every system from the A/B main judgments.

    Model: P(i preferred over j) = exp(s_i) / (exp(s_i) + exp(s_j)) (Bradley & Terry
    1952), fitted by choix's ``ilsr_pairwise`` (iterative Luce spectral ranking, the
    maximum-likelihood estimate, Maystre & Grossglauser 2015; ~40x faster than its
    ``opt_pairwise`` here) with a small regularisation ``alpha`` so that a system that
    never loses still has a finite strength;
    strengths are log-odds centred so they average 0 (the model fixes only
    differences). Intervals: percentile bootstrap over listeners (``n_boot``
    replicates, whole listeners resampled with replacement, seeded), because each
    listener contributes many correlated judgments; a replicate lacking a system's
    comparisons leaves that system out of that replicate.

    ``main``: rows with ``worker``, ``system_a``, ``system_b`` and ``preferred`` (one
    of the two systems; other rows are ignored). Returns one row per system, best
    first: system, rank, strength (log-odds), strength_ci_low/high, p_beats_average
    (P of beating a system of strength 0) with its interval, wins, comparisons,
    n_listeners. Raises ValueError when fewer than two systems were compared.
    """
    import choix

    rows = main[main["preferred"].notna() & main["system_a"].notna() & main["system_b"].notna()]
    rows = rows[(rows["preferred"] == rows["system_a"]) | (rows["preferred"] == rows["system_b"])]
    systems = sorted(set(rows["system_a"]) | set(rows["system_b"]))
    if len(systems) < 2 or rows.empty:
        raise ValueError(f"Bradley-Terry needs judgments between at least two systems (got {systems})")
    index = {name: i for i, name in enumerate(systems)}
    winner = rows["preferred"].map(index).to_numpy(int)
    loser = np.where(rows["preferred"] == rows["system_a"], rows["system_b"].map(index), rows["system_a"].map(index))
    pairs = np.stack([winner, loser.astype(int)], axis=1)
    workers = rows["worker"].to_numpy()

    def fit(data: np.ndarray, present: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            params = choix.ilsr_pairwise(len(systems), [tuple(d) for d in data], alpha=alpha)
        params = np.where(present, params, np.nan)
        return params - np.nanmean(params)

    everyone = np.ones(len(systems), bool)
    strength = fit(pairs, everyone)
    boot = np.full((max(n_boot, 0), len(systems)), np.nan)
    if n_boot:
        rng = np.random.default_rng(seed)
        by_worker = {w: pairs[workers == w] for w in np.unique(workers)}
        names = list(by_worker)
        for b in range(n_boot):
            pick = rng.integers(0, len(names), len(names))
            data = np.concatenate([by_worker[names[i]] for i in pick])
            present = np.zeros(len(systems), bool)
            present[np.unique(data)] = True
            boot[b] = fit(data, present)
    q = [(1 - confidence) / 2, (1 + confidence) / 2]
    out = []
    for i, name in enumerate(systems):
        col = boot[:, i][np.isfinite(boot[:, i])] if n_boot else np.zeros(0)
        lo, hi = np.quantile(col, q) if col.size >= 20 else (math.nan, math.nan)
        sig = lambda v: 1.0 / (1.0 + math.exp(-v)) if np.isfinite(v) else math.nan
        out.append({"system": name, "strength": float(strength[i]), "strength_ci_low": float(lo),
                    "strength_ci_high": float(hi), "p_beats_average": sig(strength[i]),
                    "p_beats_average_ci_low": sig(lo), "p_beats_average_ci_high": sig(hi),
                    "wins": int((winner == i).sum()), "comparisons": int(((winner == i) | (loser == i)).sum()),
                    "n_listeners": int(rows.loc[(rows["system_a"] == name) | (rows["system_b"] == name),
                                                "worker"].nunique())})
    table = pd.DataFrame(out).sort_values("strength", ascending=False, kind="stable").reset_index(drop=True)
    table.insert(1, "rank", np.arange(1, len(table) + 1))
    return table


def plot_ranking(strengths: pd.DataFrame, out_png: str | os.PathLike, confidence: float = 0.95) -> Path:
    """Systems ranked by Bradley-Terry strength with their bootstrap intervals
    (horizontal bars, best on top; top axis: P(beating an average system)). PNG + PDF."""
    from .figures import pyplot, save

    plt = pyplot()
    t = strengths.iloc[::-1]
    y = np.arange(len(t))
    fig, ax = plt.subplots(figsize=(6.4, 1.2 + 0.45 * len(t)))
    s = t["strength"].to_numpy(float)
    lo, hi = t["strength_ci_low"].to_numpy(float), t["strength_ci_high"].to_numpy(float)
    err = np.where(np.isfinite([lo, hi]), np.abs(np.array([s - lo, hi - s])), 0.0)
    ax.errorbar(s, y, xerr=np.maximum(err, 0.0), fmt="o", color="tab:blue", ms=6, capsize=3, lw=1.5)
    ax.axvline(0.0, color="0.6", ls="--", lw=1)
    ax.set_yticks(y, [f"{r} {n}" for r, n in zip(t["rank"], t["system"])])
    ax.set_xlabel("Bradley-Terry strength (log-odds, mean 0)")
    sec = ax.secondary_xaxis("top", functions=(lambda v: 1 / (1 + np.exp(-np.asarray(v, float))),
                                               lambda p: np.log(np.clip(p, 1e-9, 1 - 1e-9))
                                               - np.log1p(-np.clip(p, 1e-9, 1 - 1e-9))))
    sec.set_xlabel("P(preferred over an average system)")
    ax.set_title(f"ranking, {100 * confidence:g}% listener-bootstrap intervals", fontsize=11)
    fig.tight_layout()
    out_png = Path(out_png)
    save(fig, out_png)
    return out_png


@dataclass
class ABAnalysis:
    """Everything ``write_preference_report`` writes; ``summary_lines()`` is the text summary."""

    source: str
    experiment: str
    judgments: pd.DataFrame        # every answered trial
    workers: pd.DataFrame          # screen_ab_workers
    included: pd.DataFrame         # rows of included workers and passing sessions
    pairs: list[PairSummary]
    by_item: pd.DataFrame
    by_listener: pd.DataFrame
    position: PreferenceResult     # share of answers "A" over every pair
    rules: ABScreeningRules
    n_boot: int
    seed: int | None
    confidence: float
    index_html: Path | None = None
    warnings: list[str] = field(default_factory=list)
    strengths: pd.DataFrame | None = None   # Bradley-Terry, with more than two systems

    def summary_lines(self) -> list[str]:
        lines = [s.describe() for s in self.pairs]
        if self.strengths is not None:
            lines.append("Bradley-Terry ranking: " + "; ".join(
                f"{r.rank}. {r.system} {r.strength:+.2f} [{r.strength_ci_low:+.2f}, {r.strength_ci_high:+.2f}]"
                for r in self.strengths.itertuples()))
        excluded = self.workers[self.workers["excluded"]]
        lines.append(f"{len(self.workers) - len(excluded)} of {len(self.workers)} workers included"
                     + (": excluded " + ", ".join(f"{w} ({r})" for w, r in zip(excluded["worker"], excluded["reasons"]))
                        if len(excluded) else ""))
        return lines + self.warnings

    def to_dict(self) -> dict:
        return {
            "database": self.source, "experiment": self.experiment,
            "settings": {"rules": self.rules.to_dict(), "bootstrap_replicates": self.n_boot, "seed": self.seed,
                         "confidence": self.confidence},
            "n_judgments": len(self.judgments),
            "n_main_judgments": int((self.judgments["kind"] == "main").sum()),
            "n_main_judgments_included": int((self.included["kind"] == "main").sum()),
            "workers": {"n": len(self.workers), "n_excluded": int(self.workers["excluded"].sum()),
                        "excluded": [{"worker": w, "reasons": r} for w, r in
                                     zip(self.workers.loc[self.workers["excluded"], "worker"],
                                         self.workers.loc[self.workers["excluded"], "reasons"])],
                        "flagged": [{"worker": w, "flags": f} for w, f in zip(self.workers["worker"],
                                                                             self.workers["flags"]) if f]},
            "position_a": _clean(self.position.to_dict()),
            "pairs": [s.to_dict() for s in self.pairs],
            "bradley_terry": (None if self.strengths is None else
                              [_clean(r) for r in self.strengths.to_dict(orient="records")]),
            "summary": self.summary_lines(),
            "warnings": list(self.warnings),
        }


def analyse_preferences(df: pd.DataFrame, rules: ABScreeningRules | None = None, *, n_boot: int = 2000,
                        seed: int | None = 0, confidence: float = 0.95) -> ABAnalysis:
    """Screen workers, then summarise every system pair of the main trials (see the module doc)."""
    rules = rules or ABScreeningRules()
    workers = screen_ab_workers(df, rules)
    included = included_ab_judgments(df, rules, workers)
    main = included[included["kind"] == "main"]
    pair_names = sorted(p for p in df.loc[df["kind"] == "main", "pair"].dropna().unique())
    # the same seed for every pair: a pair's interval does not depend on which other pairs exist
    pairs = [summarize_pair(p, main[main["pair"] == p], n_boot=n_boot, seed=seed, confidence=confidence)
             for p in pair_names]
    warnings = []
    if main.empty:
        warnings.append(f"no main judgments from included workers ({int((df['kind'] == 'main').sum())} main "
                        f"judgments in all, {int(workers['excluded'].sum())} of {len(workers)} workers excluded)")
    position = preference_share(main.loc[main["answer"].isin(ANSWERS), "answer"], "A", "B", confidence)
    experiment = str(df["experiment"].iloc[0]) if len(df) else ""
    systems = set(main["system_a"].dropna()) | set(main["system_b"].dropna())
    strengths = (bradley_terry(main, n_boot=n_boot, seed=seed, confidence=confidence)
                 if len(systems) > 2 and main["preferred"].notna().any() else None)
    return ABAnalysis(df.attrs.get("database_url", ""), experiment, df, workers, included, pairs,
                      cluster_table(main, pairs, "item", confidence), cluster_table(main, pairs, "worker", confidence),
                      position, rules, int(n_boot), seed, confidence, warnings=warnings, strengths=strengths)


# ----------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pair_shares(pairs: list[PairSummary], out_png: str | os.PathLike) -> Path:
    """Each pair's preference share with its CIs: pooled, by item, by listener, listener bootstrap."""
    plt = _pyplot()
    views = [("pooled (Clopper-Pearson)", "o"), ("by item", "s"), ("by listener", "^"),
             ("pooled, listener bootstrap", "D")]
    fig, ax = plt.subplots(figsize=(7, 1.0 + 0.9 * max(len(pairs), 1)))
    labelled: set[str] = set()
    for i, s in enumerate(pairs):
        b = s.listener_bootstrap
        estimates = [(s.pooled.share, s.pooled.ci_low, s.pooled.ci_high),
                     (s.by_item.share, s.by_item.ci_low, s.by_item.ci_high),
                     (s.by_listener.share, s.by_listener.ci_low, s.by_listener.ci_high),
                     (b.share, b.ci_low, b.ci_high)]
        for j, ((label, marker), (share, low, high)) in enumerate(zip(views, estimates)):
            if math.isnan(share):
                continue
            y = i + 0.18 * (j - 1.5)
            err = None if math.isnan(low) else [[share - low], [high - share]]
            ax.errorbar([share], [y], xerr=err, fmt=marker, color=f"C{j}", capsize=3,
                        label=None if label in labelled else label)
            labelled.add(label)
    ax.axvline(0.5, color="0.5", lw=0.8, ls="--")
    ax.set_yticks(range(len(pairs)), [f"{s.system}\nover {s.other}" for s in pairs])
    ax.set_ylim(-0.6, max(len(pairs), 1) - 0.4)
    ax.invert_yaxis()
    ax.set_xlim(-0.02, 1.02)  # a share of exactly 0 or 1 stays visible
    ax.set_xlabel(f"share preferring the first system ({100 * (pairs[0].pooled.confidence if pairs else 0.95):g}% CI)")
    if labelled:
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)


def plot_item_shares(by_item: pd.DataFrame, pairs: list[PairSummary], out_png: str | os.PathLike) -> Path:
    """Per pair, every item's share (sorted) with its Clopper-Pearson CI and the pooled share."""
    plt = _pyplot()
    fig, axes = plt.subplots(max(len(pairs), 1), 1, figsize=(7, 2.6 * max(len(pairs), 1)), squeeze=False)
    for ax, s in zip(axes[:, 0], pairs):
        t = by_item[by_item["pair"] == s.pair].sort_values(["share", "item"])
        x = np.arange(len(t))
        ax.errorbar(x, t["share"], yerr=[t["share"] - t["ci_low"], t["ci_high"] - t["share"]], fmt="o", ms=3,
                    capsize=2, color="C0")
        ax.axhline(0.5, color="0.5", lw=0.8, ls="--")
        if not math.isnan(s.pooled.share):
            ax.axhline(s.pooled.share, color="C1", lw=1, label=f"pooled {s.pooled.share:.3f}")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"share {s.system}")
        ax.set_title(f"{s.system} over {s.other}, per item", fontsize=9)
        ax.set_xticks(x, list(t["item"]), rotation=90, fontsize=6)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)


# ----------------------------------------------------------------------------- report


def _html(a: ABAnalysis, out: Path) -> str:
    from markupsafe import Markup

    from .report import _img, _table, render_page, section

    pair_rows = pd.DataFrame([{
        "pair": s.pair, "system": s.system, "other": s.other, "n": s.pooled.n, "share": s.pooled.share,
        "ci_low": s.pooled.ci_low, "ci_high": s.pooled.ci_high, "p_value": s.pooled.p_value,
        "items": f"{s.by_item.wins}/{s.by_item.n}", "item_share": s.by_item.share,
        "listeners": f"{s.by_listener.wins}/{s.by_listener.n}", "listener_share": s.by_listener.share,
        "bootstrap_low": s.listener_bootstrap.ci_low, "bootstrap_high": s.listener_bootstrap.ci_high,
        "share_answer_a": s.position.share} for s in a.pairs])
    excluded = a.workers[a.workers["excluded"]]
    csvs = sorted(p.name for p in out.glob("*.csv")) + ["preference.json"]
    conf = f"{100 * a.confidence:g}%"
    sections = [section(
        "Summary",
        note=f"Pooled: every included main judgment as if independent, exact Clopper-Pearson {conf} interval and "
             "two-sided binomial test of no preference. Items and listeners repeat, so the pooled interval is too "
             "narrow when they disagree: by item and by listener count each item's (listener's) majority once "
             f"(split ones are ties, left out); the listener bootstrap resamples whole listeners ({a.n_boot} "
             f"replicates, seed {a.seed}) and takes the percentile interval of the pooled share.",
        blocks=[Markup("<ul>") + Markup("").join(Markup("<li>{}</li>").format(s.describe()) for s in a.pairs)
                + Markup("</ul>"), _table(pair_rows)],
        figures=[_img(out / "preference_shares.png", "preference shares")])]
    if a.strengths is not None:
        sections.append(section(
            "Ranking of all systems (Bradley-Terry)",
            note="Strengths fitted to every pair at once (choix, maximum likelihood); log-odds centred on 0; "
                 f"{conf} percentile intervals from {a.n_boot} listener-bootstrap replicates.",
            blocks=[_table(a.strengths)], figures=[_img(out / "preference_ranking.png", "ranking")]))
    sections += [
        section("Per item", figures=[_img(out / "preference_by_item.png", "per-item shares")],
                blocks=[_table(a.by_item)]),
        section("Position bias", note=f"Clip A chosen in {a.position.wins}/{a.position.n} included main judgments"
                + (f": {_ci(a.position)}, p = {_fmt_p(a.position.p_value)}" if a.position.n else "") + "."),
        section("Workers", note=f"{len(a.workers) - len(excluded)} of {len(a.workers)} included; rules "
                f"{json.dumps(a.rules.to_dict())}.",
                blocks=[_table(a.workers, ["worker", "excluded", "reasons", "flags", "n_sessions",
                                           "n_sessions_failed_screen", "n_main", "n_catch", "catch_accuracy",
                                           "n_skipped_playback", "share_answer_a", "median_rt_ms"])]),
        section("Per listener", blocks=[_table(a.by_listener)]),
    ]
    subtitle = (f"database {a.source}; {len(a.judgments)} judgments ({int((a.judgments['kind'] == 'main').sum())} "
                f"main) from {len(a.workers)} workers.")
    return render_page(f"A/B preference: {a.experiment}", subtitle, sections, a.warnings, csvs)


def write_preference_report(df_or_db: pd.DataFrame | str | os.PathLike | None, out_dir: str | os.PathLike, *,
                            experiment: str | None = None, rules: ABScreeningRules | None = None,
                            n_boot: int = 2000, seed: int | None = 0, confidence: float = 0.95) -> ABAnalysis:
    """Analyse an A/B experiment (a table from ``load_ab_judgments``, or a database URL/path)
    and write into ``out_dir``: preference.json, preference_by_item.csv,
    preference_by_listener.csv, judgments.csv, workers.csv, excluded_workers.csv,
    preference_shares.png, preference_by_item.png and index.html. Returns the analysis,
    with ``index_html`` set."""
    df = df_or_db if isinstance(df_or_db, pd.DataFrame) else load_ab_judgments(df_or_db, experiment=experiment)
    analysis = analyse_preferences(df, rules, n_boot=n_boot, seed=seed, confidence=confidence)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_tidy_csv(analysis.judgments, out / "judgments.csv")
    for name, table in (("preference_by_item.csv", analysis.by_item),
                        ("preference_by_listener.csv", analysis.by_listener),
                        ("workers.csv", analysis.workers),
                        ("excluded_workers.csv", analysis.workers[analysis.workers["excluded"]]
                         [["worker", "platform", "worker_id", "reasons", "flags", "n_main", "n_catch",
                           "catch_accuracy", "n_skipped_playback", "n_sessions_failed_screen"]])):
        write_tidy_csv(table, out / name)
    atomic_write_text(out / "preference.json", json.dumps(analysis.to_dict(), indent=2, sort_keys=True) + "\n")
    plot_pair_shares(analysis.pairs, out / "preference_shares.png")
    plot_item_shares(analysis.by_item, analysis.pairs, out / "preference_by_item.png")
    if analysis.strengths is not None:
        write_tidy_csv(analysis.strengths, out / "bradley_terry.csv")
        plot_ranking(analysis.strengths, out / "preference_ranking.png", analysis.confidence)
    index = out / "index.html"
    atomic_write_text(index, _html(analysis, out))
    analysis.index_html = index
    return analysis


__all__ = [
    "AB_COLUMNS",
    "ABAnalysis",
    "ABScreeningRules",
    "PairSummary",
    "analyse_preferences",
    "as_database_url",
    "bradley_terry",
    "cluster_table",
    "included_ab_judgments",
    "load_ab_judgments",
    "plot_item_shares",
    "plot_pair_shares",
    "plot_ranking",
    "screen_ab_workers",
    "summarize_pair",
    "tidy_ab",
    "write_preference_report",
]
