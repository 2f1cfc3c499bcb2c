"""A/B preference studies: which of two systems' outputs do listeners find closer to clean?

The A/B counterpart of the same/different pipeline, built from the same pieces: the
answers of an ``ab_preference`` experiment as a tidy table (``analysis.ab_judgments``,
read through ``listening_test.judgments_query``), worker screening
(``analysis.screening.screen_ab_workers``), pairwise statistics (``analysis.pairwise``),
figures (``analysis.preference_plots`` in the style of ``analysis.figures``) and a report
page (``analysis.rendering``). This module summarises per system pair:

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
  (``pairwise.bradley_terry``: choix's maximum-likelihood fit, log-strengths centred on 0,
  percentile intervals from a bootstrap that resamples whole listeners) and a ranking
  plot.

``write_preference_report`` writes the tables, plots, JSON and an HTML page;
``python -m analysis preference`` is its command line.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from perturbations.files import atomic_write_json, atomic_write_text
from perturbations.provenance import json_safe

from .ab_judgments import ANSWERS, load_ab_judgments
from .judgments import write_tidy_csv
from .pairwise import BootstrapInterval, PreferenceResult, bradley_terry, cluster_bootstrap_share, preference_share
from .preference_plots import plot_item_shares, plot_pair_shares, plot_ranking
from .rendering import bullets, figure, render_page, section, table
from .screening import ABScreeningRules, included_ab_judgments, screen_ab_workers

__all__ = [
    "ABAnalysis",
    "PairSummary",
    "analyse_preferences",
    "cluster_table",
    "report_sections",
    "summarize_pair",
    "write_preference_report",
]


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

    pair: str  # "<sysX>|<sysY>", names sorted
    system: str
    other: str
    pooled: PreferenceResult  # every judgment, as if independent
    by_item: PreferenceResult  # each item's majority (split items are ties)
    by_listener: PreferenceResult  # each listener's majority
    listener_bootstrap: BootstrapInterval  # pooled share, listeners resampled
    position: PreferenceResult  # share of answers "A" (system "A" over "B")
    n_items: int
    n_listeners: int

    def describe(self) -> str:
        """One sentence: the pooled share with its CI and p-value, the item and listener
        majorities, the listener-bootstrap interval and the share of answers "A"."""
        p = self.pooled
        if p.n == 0:
            return f"{self.pair}: no main judgments from included workers"
        conf = f"{100 * p.confidence:g}%"
        parts = [
            f"{self.system} preferred over {self.other} in {p.wins}/{p.n} judgments: {_ci(p)} "
            f"(Clopper-Pearson {conf}), p = {_fmt_p(p.p_value)}"
        ]
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
        """JSON-ready (NaN -> None): every summary of the pair and ``describe()``."""
        return {
            "pair": self.pair,
            "system": self.system,
            "other": self.other,
            "n_items": self.n_items,
            "n_listeners": self.n_listeners,
            "pooled": json_safe(self.pooled.to_dict()),
            "by_item": json_safe(self.by_item.to_dict()),
            "by_listener": json_safe(self.by_listener.to_dict()),
            "listener_bootstrap": self.listener_bootstrap.to_dict(),
            "position_a": json_safe(self.position.to_dict()),
            "summary": self.describe(),
        }


def _orient(pair: str, main: pd.DataFrame) -> tuple[str, str]:
    """(system, other): the pooled winner first; on a tie (or no data) the sorted order."""
    x, y = (pair.split("|", 1) + [""])[:2]
    wins_x, wins_y = int((main["preferred"] == x).sum()), int((main["preferred"] == y).sum())
    return (y, x) if wins_y > wins_x else (x, y)


def summarize_pair(
    pair: str, main: pd.DataFrame, *, n_boot: int = 2000, seed: int | None = 0, confidence: float = 0.95
) -> PairSummary:
    """The summaries of one pair ("<sysX>|<sysY>") from its main-trial rows (only rows whose
    ``preferred`` names one of its systems count): pooled Clopper-Pearson share, item and
    listener majorities, a listener bootstrap of ``n_boot`` replicates (``seed``), and the
    share of answers "A". Raises ValueError for ``confidence`` outside (0, 1) or negative
    ``n_boot`` (``analysis.pairwise``)."""
    system, other = _orient(pair, main)
    rows = main[main["preferred"].isin([system, other])]
    pooled = preference_share(rows["preferred"], system, other, confidence)
    items = [_majority(g, system, other) for _, g in rows.groupby("item", sort=True)["preferred"]]
    by_worker = rows.groupby("worker", sort=True)["preferred"]
    listeners = [_majority(g, system, other) for _, g in by_worker]
    wins = by_worker.apply(lambda s: int((s == system).sum())).to_numpy(int) if len(rows) else np.zeros(0, int)
    sizes = by_worker.size().to_numpy(int) if len(rows) else np.zeros(0, int)
    position = preference_share(rows.loc[rows["answer"].isin(ANSWERS), "answer"], "A", "B", confidence)
    return PairSummary(
        pair,
        system,
        other,
        pooled,
        preference_share(items, system, other, confidence),
        preference_share(listeners, system, other, confidence),
        cluster_bootstrap_share(wins, sizes, n_boot=n_boot, seed=seed, confidence=confidence),
        position,
        len(items),
        len(listeners),
    )


def cluster_table(main: pd.DataFrame, pairs: list[PairSummary], by: str, confidence: float = 0.95) -> pd.DataFrame:
    """Wins and losses per ``by`` ("item" or "worker") within each pair, with Clopper-Pearson CIs:
    one row per (``by``, pair), its majority, and how many listeners (items) it pools."""
    records = []
    for s in pairs:
        rows = main[(main["pair"] == s.pair) & main["preferred"].isin([s.system, s.other])]
        for key, g in rows.groupby(by, sort=True):
            r = preference_share(g["preferred"], s.system, s.other, confidence)
            records.append(
                {
                    by: key,
                    "pair": s.pair,
                    "system": s.system,
                    "other": s.other,
                    "wins": r.wins,
                    "losses": r.losses,
                    "n": r.n,
                    "share": r.share,
                    "ci_low": r.ci_low,
                    "ci_high": r.ci_high,
                    "majority": _majority(g["preferred"], s.system, s.other),
                    ("n_listeners" if by == "item" else "n_items"): g["worker" if by == "item" else "item"].nunique(),
                }
            )
    columns = [
        by,
        "pair",
        "system",
        "other",
        "wins",
        "losses",
        "n",
        "share",
        "ci_low",
        "ci_high",
        "majority",
        "n_listeners" if by == "item" else "n_items",
    ]
    return pd.DataFrame.from_records(records, columns=columns)


# ----------------------------------------------------------------------------- analysis


@dataclass
class ABAnalysis:
    """Everything ``write_preference_report`` writes; ``summary_lines()`` is the text summary."""

    source: str
    experiment: str
    judgments: pd.DataFrame  # every answered trial
    workers: pd.DataFrame  # screen_ab_workers
    included: pd.DataFrame  # rows of included workers and passing sessions
    pairs: list[PairSummary]
    by_item: pd.DataFrame
    by_listener: pd.DataFrame
    position: PreferenceResult  # share of answers "A" over every pair
    rules: ABScreeningRules
    n_boot: int
    seed: int | None
    confidence: float
    index_html: Path | None = None
    warnings: list[str] = field(default_factory=list)
    strengths: pd.DataFrame | None = None  # Bradley-Terry, with more than two systems

    def summary_lines(self) -> list[str]:
        """The text summary: one line per pair, the ranking, who was excluded, the warnings."""
        lines = [s.describe() for s in self.pairs]
        if self.strengths is not None:
            lines.append(
                "Bradley-Terry ranking: "
                + "; ".join(
                    f"{r.rank}. {r.system} {r.strength:+.2f} [{r.strength_ci_low:+.2f}, {r.strength_ci_high:+.2f}]"
                    for r in self.strengths.itertuples()
                )
            )
        excluded = self.workers[self.workers["excluded"]]
        lines.append(
            f"{len(self.workers) - len(excluded)} of {len(self.workers)} workers included"
            + (
                ": excluded " + ", ".join(f"{w} ({r})" for w, r in zip(excluded["worker"], excluded["reasons"]))
                if len(excluded)
                else ""
            )
        )
        return lines + self.warnings

    def to_dict(self) -> dict:
        """preference.json: settings, counts, excluded and flagged workers, every pair,
        position bias, Bradley-Terry rows and the summary (JSON-ready, NaN -> None)."""
        return {
            "database": self.source,
            "experiment": self.experiment,
            "settings": {
                "rules": self.rules.to_dict(),
                "bootstrap_replicates": self.n_boot,
                "seed": self.seed,
                "confidence": self.confidence,
            },
            "n_judgments": len(self.judgments),
            "n_main_judgments": int((self.judgments["kind"] == "main").sum()),
            "n_main_judgments_included": int((self.included["kind"] == "main").sum()),
            "workers": {
                "n": len(self.workers),
                "n_excluded": int(self.workers["excluded"].sum()),
                "excluded": [
                    {"worker": w, "reasons": r}
                    for w, r in zip(
                        self.workers.loc[self.workers["excluded"], "worker"],
                        self.workers.loc[self.workers["excluded"], "reasons"],
                    )
                ],
                "flagged": [
                    {"worker": w, "flags": f} for w, f in zip(self.workers["worker"], self.workers["flags"]) if f
                ],
            },
            "position_a": json_safe(self.position.to_dict()),
            "pairs": [s.to_dict() for s in self.pairs],
            "bradley_terry": (
                None if self.strengths is None else [json_safe(r) for r in self.strengths.to_dict(orient="records")]
            ),
            "summary": self.summary_lines(),
            "warnings": list(self.warnings),
        }


def analyse_preferences(
    df: pd.DataFrame,
    rules: ABScreeningRules | None = None,
    *,
    n_boot: int = 2000,
    seed: int | None = 0,
    confidence: float = 0.95,
) -> ABAnalysis:
    """Screen workers (``analysis.screening.screen_ab_workers``), then summarise every system
    pair of the included main trials (see the module doc); with more than two systems, fit
    Bradley-Terry strengths. ``df``: the table of ``analysis.ab_judgments``. Raises
    ValueError for ``confidence`` outside (0, 1) or negative ``n_boot``."""
    rules = rules or ABScreeningRules()
    workers = screen_ab_workers(df, rules)
    included = included_ab_judgments(df, rules, workers)
    main = included[included["kind"] == "main"]
    pair_names = sorted(p for p in df.loc[df["kind"] == "main", "pair"].dropna().unique())
    # the same seed for every pair: a pair's interval does not depend on which other pairs exist
    pairs = [
        summarize_pair(p, main[main["pair"] == p], n_boot=n_boot, seed=seed, confidence=confidence) for p in pair_names
    ]
    warnings = []
    if main.empty:
        warnings.append(
            f"no main judgments from included workers ({int((df['kind'] == 'main').sum())} main "
            f"judgments in all, {int(workers['excluded'].sum())} of {len(workers)} workers excluded)"
        )
    position = preference_share(main.loc[main["answer"].isin(ANSWERS), "answer"], "A", "B", confidence)
    experiment = str(df["experiment"].iloc[0]) if len(df) else ""
    systems = set(main["system_a"].dropna()) | set(main["system_b"].dropna())
    strengths = (
        bradley_terry(main, n_boot=n_boot, seed=seed, confidence=confidence)
        if len(systems) > 2 and main["preferred"].notna().any()
        else None
    )
    return ABAnalysis(
        df.attrs.get("database_url", ""),
        experiment,
        df,
        workers,
        included,
        pairs,
        cluster_table(main, pairs, "item", confidence),
        cluster_table(main, pairs, "worker", confidence),
        position,
        rules,
        int(n_boot),
        seed,
        confidence,
        warnings=warnings,
        strengths=strengths,
    )


# ----------------------------------------------------------------------------- report


def report_sections(a: ABAnalysis, out: Path) -> list[dict]:
    """The sections of the report page (``analysis.rendering``): summary, Bradley-Terry
    ranking, per item, position bias, workers, per listener. Reads the figures that
    ``write_preference_report`` wrote into ``out``; raises OSError when one is missing."""
    pair_rows = pd.DataFrame(
        [
            {
                "pair": s.pair,
                "system": s.system,
                "other": s.other,
                "n": s.pooled.n,
                "share": s.pooled.share,
                "ci_low": s.pooled.ci_low,
                "ci_high": s.pooled.ci_high,
                "p_value": s.pooled.p_value,
                "items": f"{s.by_item.wins}/{s.by_item.n}",
                "item_share": s.by_item.share,
                "listeners": f"{s.by_listener.wins}/{s.by_listener.n}",
                "listener_share": s.by_listener.share,
                "bootstrap_low": s.listener_bootstrap.ci_low,
                "bootstrap_high": s.listener_bootstrap.ci_high,
                "share_answer_a": s.position.share,
            }
            for s in a.pairs
        ]
    )
    excluded = a.workers[a.workers["excluded"]]
    conf = f"{100 * a.confidence:g}%"
    sections = [
        section(
            "Summary",
            note=f"Pooled: every included main judgment as if independent, exact Clopper-Pearson {conf} interval and "
            "two-sided binomial test of no preference. Items and listeners repeat, so the pooled interval is too "
            "narrow when they disagree: by item and by listener count each item's (listener's) majority once "
            f"(split ones are ties, left out); the listener bootstrap resamples whole listeners ({a.n_boot} "
            f"replicates, seed {a.seed}) and takes the percentile interval of the pooled share.",
            blocks=[bullets(s.describe() for s in a.pairs), table(pair_rows)],
            figures=[figure(out / "preference_shares.png", "preference shares")],
        )
    ]
    if a.strengths is not None:
        sections.append(
            section(
                "Ranking of all systems (Bradley-Terry)",
                note="Strengths fitted to every pair at once (choix, maximum likelihood); log-odds centred on 0; "
                f"{conf} percentile intervals from {a.n_boot} listener-bootstrap replicates.",
                blocks=[table(a.strengths)],
                figures=[figure(out / "preference_ranking.png", "ranking")],
            )
        )
    sections += [
        section(
            "Per item", figures=[figure(out / "preference_by_item.png", "per-item shares")], blocks=[table(a.by_item)]
        ),
        section(
            "Position bias",
            note=f"Clip A chosen in {a.position.wins}/{a.position.n} included main judgments"
            + (f": {_ci(a.position)}, p = {_fmt_p(a.position.p_value)}" if a.position.n else "")
            + ".",
        ),
        section(
            "Workers",
            note=f"{len(a.workers) - len(excluded)} of {len(a.workers)} included; rules "
            f"{json.dumps(a.rules.to_dict())}.",
            blocks=[
                table(
                    a.workers,
                    [
                        "worker",
                        "excluded",
                        "reasons",
                        "flags",
                        "n_sessions",
                        "n_sessions_failed_screen",
                        "n_main",
                        "n_catch",
                        "catch_accuracy",
                        "n_skipped_playback",
                        "share_answer_a",
                        "median_rt_ms",
                    ],
                )
            ],
        ),
        section("Per listener", blocks=[table(a.by_listener)]),
    ]
    return sections


def write_preference_report(
    df_or_db: pd.DataFrame | str | os.PathLike | None,
    out_dir: str | os.PathLike,
    *,
    experiment: str | None = None,
    rules: ABScreeningRules | None = None,
    n_boot: int = 2000,
    seed: int | None = 0,
    confidence: float = 0.95,
) -> ABAnalysis:
    """Analyse an A/B experiment (a table from ``load_ab_judgments``, or a database URL/path)
    and write into ``out_dir``: preference.json, preference_by_item.csv,
    preference_by_listener.csv, judgments.csv, workers.csv, excluded_workers.csv,
    preference_shares.png, preference_by_item.png (PNG + PDF), with more than two systems
    bradley_terry.csv and preference_ranking.png, and index.html (``analysis/templates/
    report.html``). Returns the analysis, with ``index_html`` set.

    Raises:
        JudgmentsError: the database cannot be read or holds no A/B main trials.
        OSError: ``out_dir`` cannot be written.
    """
    df = df_or_db if isinstance(df_or_db, pd.DataFrame) else load_ab_judgments(df_or_db, experiment=experiment)
    analysis = analyse_preferences(df, rules, n_boot=n_boot, seed=seed, confidence=confidence)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_tidy_csv(analysis.judgments, out / "judgments.csv")
    for name, frame in (
        ("preference_by_item.csv", analysis.by_item),
        ("preference_by_listener.csv", analysis.by_listener),
        ("workers.csv", analysis.workers),
        (
            "excluded_workers.csv",
            analysis.workers[analysis.workers["excluded"]][
                [
                    "worker",
                    "platform",
                    "worker_id",
                    "reasons",
                    "flags",
                    "n_main",
                    "n_catch",
                    "catch_accuracy",
                    "n_skipped_playback",
                    "n_sessions_failed_screen",
                ]
            ],
        ),
    ):
        write_tidy_csv(frame, out / name)
    atomic_write_json(out / "preference.json", analysis.to_dict(), indent=2, sort_keys=True)
    plot_pair_shares(analysis.pairs, out / "preference_shares.png")
    plot_item_shares(analysis.by_item, analysis.pairs, out / "preference_by_item.png")
    if analysis.strengths is not None:
        write_tidy_csv(analysis.strengths, out / "bradley_terry.csv")
        plot_ranking(analysis.strengths, out / "preference_ranking.png", analysis.confidence)
    csvs = sorted(p.name for p in out.glob("*.csv")) + ["preference.json"]
    subtitle = (
        f"database {analysis.source}; {len(analysis.judgments)} judgments "
        f"({int((analysis.judgments['kind'] == 'main').sum())} main) from {len(analysis.workers)} workers."
    )
    page = render_page(
        f"A/B preference: {analysis.experiment}", subtitle, report_sections(analysis, out), analysis.warnings, csvs
    )
    analysis.index_html = atomic_write_text(out / "index.html", page)
    return analysis
