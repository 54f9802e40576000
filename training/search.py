"""Automatic model choice on the validation rows only, within a time budget.

    trained = search(series, config, SearchConfig(budget=60.0), fixed={"cell"})

Candidates are fitted on the training rows and scored on the validation rows, by rolling
origin at 1 and 5 steps (5 only when every input is a target), relative to persistence on
the same rows: score = mean over horizons of RMSE / persistence RMSE. Nothing about the
test rows takes part in the choice (each candidate is fitted by `pipeline.train`, which
also scores them, but those figures are dropped with the candidate).

The order of work:
1. structures (SPACE below), first seed: the default first, then one dimension changed
   from it, then two, ... while half the budget lasts;
2. more seeds of the two best structures, alternately, while the budget lasts;
3. the structure: among those fitted with the most seeds, the one with the lowest mean
   score over its seeds (not the single best candidate: chosen among many on a few
   validation rows, its score is biased low, and its seed decides as much as its structure);
4. the average of the top k seeds of that structure (k = 1 .. ensemble), scored on
   validation as the one model it is: the largest k whose average scores no worse than
   the structure's mean seed score is kept;
5. the chosen members are refit on training + validation (when the config refits).

A candidate starts only while the time spent, its expected cost (the mean of those before;
for another seed, that of its structure's seeds before) and one refit still fit in the
budget; the first always runs. An average has only as many
members as the time left can refit.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from training.baselines import Span, model_scores, naive_paths, rollable, score_paths
from training.config import SearchConfig, TrainConfig
from training.data import Series, auto_burn_in
from training.ensemble import Ensemble
from training.evaluate import evaluate, evaluate_validation, torch_runner
from training.fit import make_reproducible, resolve_device
from training.intervals import calibrate
from training.manifest import TargetTransform
from training.models import Forecaster
from training.pipeline import Trained, make_split, refit_trained, resolve_transform, shifted, train

log = logging.getLogger(__name__)

AUTO = "auto"  # the window the data allows (training.data.auto_window): the config's window
SHORT = "short"  # a quarter of it: a shorter memory, more subsequences per epoch
UNLOGGED = "unlogged"  # the automatic transform without its log (e.g. diff for log-diff)
# What the search varies and the values it tries, the first of each being the default.
# A dimension given on the command line is held at the given value.
SPACE: dict[str, tuple[Any, ...]] = {
    "cell": ("lstm", "gru"),
    "hidden_size": (32, 64),
    "window": (AUTO, SHORT),
    # "auto": the transform chosen from the training rows (training.transforms); when that
    # choice takes a log, UNLOGGED (the same differences without it) is tried too, and
    # "none" when the choice is not already none. A --transform other than auto holds it.
    "transform": ("auto", UNLOGGED, "none"),
}
HORIZONS = (1, 5)
# With `calendar` (the series with calendar inputs, e.g. month for monthly rows; see
# training.calendar.default_calendar), the search also tries each structure with them:
# CALENDAR is that dimension, without first. Tried with the identity transform only (a
# transformed model with extra inputs is scored one step ahead only).
CALENDAR = "calendar"
EXPLORE_SHARE = 0.5  # of the budget for structures; the rest for more seeds


@dataclass
class Candidate:
    """One fitted candidate (before any refit) and its validation figures."""

    config: TrainConfig
    trained: Trained
    validation: dict[int, float]  # RMSE per horizon, original units
    score: float  # mean RMSE / persistence RMSE over the horizons
    seconds: float  # fitting, scoring and the rest of train()
    calendar: tuple[str, ...] = ()  # the calendar inputs of its series

    @property
    def key(self) -> tuple[TrainConfig, tuple[str, ...]]:
        return self.config, self.calendar

    def record(self) -> dict[str, Any]:
        c = self.config
        return {
            "cell": c.cell,
            "hidden_size": c.hidden_size,
            "window": c.window,
            "transform": c.transform,
            "seed": c.seed,
            "calendar": list(self.calendar),
            "epochs": self.trained.history.epochs_run,
            "best_epoch": self.trained.history.best_epoch,
            "seconds": round(self.seconds, 2),
            "validation_rmse": {str(h): v for h, v in self.validation.items()},
            "score": self.score,
        }


def structures(
    config: TrainConfig,
    fixed: Collection[str],
    space: dict[str, tuple[Any, ...]] | None = None,
) -> list[dict[str, Any]]:
    """Every structure of `space` (SPACE by default; dimensions in `fixed` held at the
    config's value), the default first, then ordered by how many dimensions differ from it."""
    dims = {
        name: (getattr(config, name),) if name in fixed else values
        for name, values in (SPACE if space is None else space).items()
    }
    default = {name: values[0] for name, values in dims.items()}
    if "cell" not in fixed:
        # The config's own cell first: --cell without search is the old default.
        dims["cell"] = (config.cell, *(c for c in dims["cell"] if c != config.cell))
        default["cell"] = config.cell
    combos = [dict(zip(dims, combo, strict=True)) for combo in itertools.product(*dims.values())]
    return sorted(combos, key=lambda s: sum(s[k] != default[k] for k in s))


def candidate_config(
    config: TrainConfig,
    structure: dict[str, Any],
    seed: int,
    chosen: TargetTransform | None = None,
) -> TrainConfig:
    """The config of one candidate: the structure's values, the seed, no refit yet.

    `chosen` is the automatic transform, which UNLOGGED strips of its log.
    """
    values = {k: v for k, v in structure.items() if k != CALENDAR}
    if values.get("transform") == UNLOGGED:
        if chosen is None:
            raise ValueError(f"transform {UNLOGGED} needs the automatic transform")
        values["transform"] = chosen.model_copy(update={"log": None}).kind
    window = config.window
    if values.get("window") == SHORT:
        window = max(2, config.window // 4)
    elif values.get("window") != AUTO and "window" in values:
        window = int(values["window"])
    values["window"] = window
    burn_in = config.burn_in if window == config.window else auto_burn_in(window)
    return replace(config, **values, burn_in=burn_in, seed=seed, refit=False)


def validation_scores(
    model: Forecaster, trained: Trained, horizons: tuple[int, ...] = HORIZONS
) -> tuple[dict[int, float], float]:
    """RMSE per horizon on the validation rows and the score (mean ratio to persistence)."""
    series, split = trained.series, trained.split
    span = Span(series, split.train_end, split.val_end)
    if not rollable(series):
        horizons = (1,)
    horizons = tuple(h for h in horizons if h <= split.train_end) or (1,)
    ours, _ = model_scores(model, series, trained.scalers, span, horizons, trained.transform)
    hmax = max(horizons)
    naive = score_paths(naive_paths(series.targets, span.origins(hmax), hmax, 1), span, horizons)
    rmse = {h: ours[h]["rmse"] for h in horizons}
    ratios = [rmse[h] / naive[h]["rmse"] if naive[h]["rmse"] > 0 else rmse[h] for h in horizons]
    score = float(np.mean(ratios))
    return rmse, score if np.isfinite(score) else float("inf")


class _Budget:
    """Seconds left for candidates, leaving room for the refit of the chosen members."""

    def __init__(self, seconds: float, clock: Callable[[], float], refit_share: float) -> None:
        self.seconds = seconds
        self.clock = clock
        self.start = clock()
        self.refit_share = refit_share  # a refit's cost relative to its candidate's fit

    def elapsed(self) -> float:
        return self.clock() - self.start

    def expected(self, done: list[Candidate]) -> float:
        """Seconds the next candidate should take: the mean of those before."""
        return float(np.mean([c.seconds for c in done]))

    def allows(
        self, done: list[Candidate], limit: float, like: list[Candidate] | None = None
    ) -> bool:
        """Whether one more candidate and then one refit fit within `limit` seconds; it
        should cost what those `like` it did (the same structure), else the mean of all."""
        if not done:
            return True
        expected = self.expected(like or done)
        return self.elapsed() + expected * (1.0 + self.refit_share) <= limit

    def refits(self, done: list[Candidate]) -> int:
        """How many refits the time left allows (at least one)."""
        each = self.expected(done) * self.refit_share
        if each <= 0.0:
            return len(done)
        return max(1, int((self.seconds - self.elapsed()) // each))


def search(
    series: Series,
    config: TrainConfig,
    search_config: SearchConfig,
    fixed: Collection[str] = (),
    progress: bool = False,
    clock: Callable[[], float] = time.perf_counter,
    calendar: Series | None = None,
) -> list[Trained]:
    """The model chosen on validation within the budget, refit unless the config says not.

    `fixed` names the dimensions of SPACE to hold at the config's value. Each result's
    `search` field records every candidate, the choice and the time spent. When the choice
    is an average, the best candidate alone follows it: the fallback should the average
    fail the export check.

    `calendar`: the same rows with calendar inputs; each structure is then tried without
    them (first) and with them, and validation decides.
    """
    # torch's first deterministic run imports its compiler stack (seconds): done before the
    # clock starts, so the first candidate's time predicts the others'.
    make_reproducible(config, resolve_device(config.device))
    split = make_split(series, config)
    refit_share = split.val_end / split.train_end if config.refit else 0.0
    budget = _Budget(search_config.budget, clock, refit_share)
    done: list[Candidate] = []

    def source(structure: dict[str, Any]) -> Series:
        return calendar if calendar is not None and structure.get(CALENDAR) else series

    def names(data: Series) -> tuple[str, ...]:
        return tuple(data.time.calendar) if data.time is not None else ()

    def run(structure: dict[str, Any], seed: int) -> Candidate | None:
        cfg = candidate_config(config, structure, seed, chosen)
        data = source(structure)
        if data is not series and not _identity(cfg.transform, chosen):
            return None  # extra inputs on a transformed target: one step ahead only
        if any(c.key == (cfg, names(data)) for c in done):  # e.g. a short window = the full
            return None
        t0 = clock()
        trained = train(data, cfg, progress=progress)
        rmse, score = validation_scores(trained.model, trained)
        done.append(Candidate(cfg, trained, rmse, score, clock() - t0, names(data)))
        log.info("candidate %s seed %d: score %.4f", structure, seed, score)
        return done[-1]

    held = set(fixed)
    chosen = resolve_transform(series, config, split)
    if config.transform != "auto" or (chosen.lag == 0 and chosen.log is None):
        held.add("transform")  # given, or auto already means none: nothing to try
    space = dict(SPACE)
    if chosen.log is None or chosen.lag == 0:  # without a log, or a log alone: none is it
        space["transform"] = tuple(t for t in SPACE["transform"] if t != UNLOGGED)
    if calendar is not None:
        space[CALENDAR] = (False, True)
    shapes = structures(config, held, space)
    firsts: list[tuple[dict[str, Any], Candidate]] = []
    for shape in shapes:
        if not budget.allows(done, search_config.budget * EXPLORE_SHARE):
            break
        found = run(shape, config.seed)
        if found is not None:
            firsts.append((shape, found))
    ranked = sorted(firsts, key=lambda sc: sc[1].score)[:2]
    extra = [(shape, config.seed + s) for s in range(1, search_config.seeds) for shape, _ in ranked]
    for shape, seed in extra:
        like = [
            c
            for c in done
            if c.key
            == (candidate_config(config, shape, c.config.seed, chosen), names(source(shape)))
        ]
        if not budget.allows(done, search_config.budget, like):
            break
        run(shape, seed)
    searched = budget.elapsed()
    tried = list(names(calendar)) if calendar is not None else []
    return _finish(done, config, search_config, len(shapes), searched, budget, progress, tried)


def _finish(
    done: list[Candidate],
    config: TrainConfig,
    search_config: SearchConfig,
    n_structures: int,
    searched: float,
    budget: _Budget,
    progress: bool,
    calendar_tried: list[str],
) -> list[Trained]:
    """Average the top k when validation prefers it; refit; score the test rows once."""
    order = sorted(done, key=lambda c: c.score)
    # The structure: of those fitted with the most seeds, the lowest mean score over its
    # seeds (a single seed's score, chosen among many, is biased low by the choice).
    groups: dict[tuple[Any, ...], list[Candidate]] = {}
    for c in order:
        groups.setdefault(_structure(c), []).append(c)
    most_seeds = max(len(g) for g in groups.values())
    pool = min(
        (g for g in groups.values() if len(g) == most_seeds),
        key=lambda g: float(np.mean([c.score for c in g])),
    )
    best = pool[0]
    # As many members as the time left can refit (when refitting), up to the ensemble size:
    # the structure's seeds, best first (they share the cell, hence one state layout, and
    # the transform, hence one output unit).
    seed_mean = float(np.mean([c.score for c in pool]))
    most = search_config.ensemble if not config.refit else budget.refits(pool)
    pool = pool[: min(search_config.ensemble, most)]
    scores = {1: best.score}
    for k in range(2, len(pool) + 1):
        members = Ensemble([c.trained.model for c in pool[:k]])
        scores[k] = validation_scores(members, best.trained)[1]
    # The most members whose average scores no worse than the structure's mean seed score:
    # what one seed of it may be expected to score. The best seed's own score is biased low
    # by its choice among the seeds on a few validation rows (an average's much less), and
    # averaging steadies the seed's effect.
    k = max(n for n, v in scores.items() if v <= seed_mean)
    chosen = pool[:k]
    if config.refit:
        finals = [refit_trained(c.trained, progress) for c in chosen]
    else:
        finals = [c.trained for c in chosen]
    head = finals[0]
    record: dict[str, Any] = {
        "config": search_config.to_dict(),
        "space": {n: list(v) for n, v in SPACE.items()},
        # The calendar inputs tried beside none (empty: not tried) and those chosen.
        "calendar_tried": calendar_tried,
        "calendar": list(best.calendar),
        "structures": n_structures,
        "candidates": [c.record() for c in done],
        "chosen": "best" if k == 1 else f"average of the top {k}",
        "members": [done.index(c) for c in chosen],
        "validation_score_by_k": {str(n): s for n, s in scores.items()},
        # The mean score of the chosen structure's seeds: an average is kept when it scores
        # no worse.
        "seed_mean_score": seed_mean,
        "search_seconds": round(searched, 2),
        "seconds": round(budget.elapsed(), 2),
    }
    if k == 1:
        return [replace(head, search=record)]
    # The members share the scalers: the same kind fitted on the same (transformed) rows.
    model = Ensemble([t.model for t in finals])
    before = Ensemble([c.trained.model for c in chosen])
    train_scalers = chosen[0].trained.scalers
    transform = head.transform
    identity = transform.lag == 0 and transform.log is None
    mseries = head.series if identity else head.model_series
    msplit = shifted(head.split, transform.lag)
    levels = None if identity else head.series
    t = None if identity else transform
    window = head.config.window
    validation = evaluate_validation(
        torch_runner(before), mseries, msplit, train_scalers, window, t, levels
    )
    intervals = calibrate(before, mseries, msplit, train_scalers, transform, levels)
    evaluation = evaluate(
        torch_runner(model), mseries, msplit, head.scalers, window, validation, t, levels
    )
    alone = {**record, "chosen": "best", "members": record["members"][:1]}
    return [
        replace(head, model=model, evaluation=evaluation, intervals=intervals, search=record),
        replace(head, search=alone),
    ]


def _structure(c: Candidate) -> tuple[Any, ...]:
    config = c.config
    return config.cell, config.hidden_size, config.window, config.transform, c.calendar


def _identity(transform: str, chosen: TargetTransform) -> bool:
    """Whether the candidate's transform leaves the target as it is."""
    if transform == "auto":
        return chosen.lag == 0 and chosen.log is None
    return transform == "none"
