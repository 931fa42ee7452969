"""`python -m lstm_mnist ablate FILE` for a grid file with a [tune] table: every arm tuned with an equal budget
(one Optuna study per arm, trials at tune_seed, the objective a validation metric), then each arm's replicate
cells trained at its best trial's values, all on the grid's workers, claims and parent run (grids/ablate.py)."""
from __future__ import annotations

from pathlib import Path

import optuna

from ... import claims
from ...config import ConfigError
from ...engine import drive as engine
from ...engine.writer import Tally
from ...tracking import query, store
from .. import ablate, grid
from ..options import Options
from ..plan import plan, read_plan, table
from .schedule import Schedule, tuned_plan
from .search import ArmSearch, definition


def fingerprint_of(s: grid.GridSpec) -> str:
    """The data fingerprint of the grid's cells (every cell of a grid shares its data)."""
    return s.task.data_fingerprint(s.start)


def main(s: grid.GridSpec, opts: Options) -> int:
    """A grid with a [tune] table (runner.py chose it): every arm's search, then its tuned cells."""
    if opts.dry_run:
        opts.out(describe(s, fingerprint_of(s), opts.storage_url, opts.force))
        return 0
    with engine.capacity(opts.workers, opts.ray, s.start) as (n_workers, held):
        return train(s, ablate.invocation(opts, n_workers, held), opts.force)


def train(s: grid.GridSpec, inv: ablate.Invocation, force: bool = False, sequential: dict | None = None) -> int:
    """Every arm's search, then its tuned cells at the grid's seeds, under the grid's parent run; `sequential`
    joins the recorded plan (a tuned grid run --until-decided: one call per block of seeds, the searches shared
    by every block). 0 unless a cell failed."""
    check_recorded(s)
    fingerprint = fingerprint_of(s)
    p = ablate.prepare(s, inv, None, force)
    arms = [a for a in grid.unique_arms(s) if grid.searched(s, a.on)]
    searches = [ArmSearch(s, a, fingerprint, p.claims.storage, r) for a in arms for r in range(s.tune.repeats)]
    trials_left = sum(x.open_study() for x in searches)
    n_tuned = len(s.seeds) * len(arms)
    tally = Tally(total=len(p.jobs) + n_tuned, skipped=sum(j.state == "done" for j in p.jobs))
    store.share_sqlite_store()
    repeats = f" ({s.tune.repeats} tuning repeats each)" if s.tune.repeats > 1 else ""
    inv.out(f"{s.name}: {len(arms)} arms tuned{repeats} with {s.tune.settings.trials} trials each "
            f"({trials_left} trials to run), "
            f"then {n_tuned} tuned cells; {len(p.jobs)} cells known before tuning, {len(p.jobs) - len(p.todo)} "
            f"already FINISHED; {inv.n_workers} worker{'s' * (inv.n_workers > 1)} (experiment {s.experiment})")

    def schedule(writer, parent):
        return Schedule(s, searches, p.todo, writer, parent, p.every, p.share, p.claims, force, sequential)

    return ablate.execute(p, inv, tally, tuned_plan(s, p.every, searches, sequential), schedule,
                          trials_left + len(p.todo) + n_tuned)


def check_recorded(s: grid.GridSpec) -> None:
    """A tuned grid's budget (trials per arm) and tuning repeats are fixed when it starts: every arm's searches
    must have the same, and the replicate seeds' repeats stay as recorded. A rerun that asks for others is one
    line (nothing is recorded)."""
    parents = query.parents(s.experiment, "grid", s.name)
    if not parents:
        return
    before = read_plan(max(parents, key=query.last_invoked).run_id, s.name, missing_ok=True)
    t = before.tuning if before else None
    if t and (t.trials, t.repeats) != (s.tune.settings.trials, s.tune.repeats):
        raise ConfigError(f"grid {s.name!r} was tuned with trials = {t.trials} and tune_repeats = {t.repeats} per arm; "
                          f"{s.path} asks for trials = {s.tune.settings.trials}, tune_repeats = {s.tune.repeats}. "
                          "The budget and "
                          "repeats are fixed when a tuned grid starts (every arm's equal budget): put them back, or "
                          "copy the grid file to a new name for another design")


# ---------------------------------------------------------------- the dry run
def describe(s: grid.GridSpec, fingerprint: str, storage_url: str | None, force: bool) -> str:
    """Arms, the keys each searches and its study's progress; then the replicate cells, known and to come."""
    t, st = s.tune, s.tune.settings
    lines = [f"{s.name}: a tuned grid. Each arm searches the [tune.space] keys its config reads, {st.trials} trials "
             f"(COMPLETE + PRUNED) per arm; objective {st.objective} on the validation split; sampler {st.sampler} "
             f"(seed {st.sampler_seed}), pruner {st.pruner}; trials train with tune_seed {t.seed}, replicates with "
             f"seeds {', '.join(map(str, s.seeds))}" + ("; the untuned cells are trained too (fixed = true)"
                                                         if t.fixed else "")]
    if t.repeats > 1:
        lines.append(f"tune_repeats = {t.repeats}: each arm searched by {t.repeats} independent studies "
                     f"(repeat r: trials "
                     f"at seed {t.seed} + r, sampler seed {st.sampler_seed} + r); the replicate seeds train at the "
                     "values of " + "; ".join(f"repeat {r} (seeds {', '.join(map(str, t.seeds_of(s.seeds, r)))})"
                                              for r in range(t.repeats)))
    stored = _stored_studies(s, storage_url)
    w = max(28, *(len(a.arm) for a in grid.unique_arms(s)))
    lines.append(f"{'arm':<{w}} {'designs':<26} {'study':<20} searches")
    for a in grid.unique_arms(s):
        space = grid.searched(s, a.on)
        if not space:
            lines.append(f"{a.arm:<{w}} {','.join(a.designs):<26} {'-':<20} nothing (its cells are its tuned cells)")
            continue
        for r in range(t.repeats):
            name = definition(s, a, fingerprint, r).name
            label = f"{a.arm} r{r}" if t.repeats > 1 else a.arm
            lines.append(f"{label:<{w}} {','.join(a.designs):<26} {stored.get(name, 'not started'):<20} "
                         f"{', '.join(space)}")
    jobs = plan(s, None, force)
    tuned = [a for a in grid.unique_arms(s) if grid.searched(s, a.on)]
    lines.append("replicate cells known before tuning:" if jobs else "no replicate cell is known before tuning")
    if jobs:
        lines.append(table(jobs))
    lines.append(f"after tuning: {len(tuned) * len(s.seeds)} tuned cells ({len(tuned)} arms x seeds "
                 f"{', '.join(map(str, s.seeds))}), named <arm>-tuned-s<seed>, each at its arm's best trial's values"
                 + (" (of its seed's repeat)" if t.repeats > 1 else ""))
    return "\n".join(lines)


def _stored_studies(s: grid.GridSpec, storage_url: str | None) -> dict:
    """Study name -> 'N of M trials' for the grid's studies already in the storage (read only: a dry run creates
    nothing)."""
    journal = store.local_dir() / "claims.journal"
    if storage_url is None and not Path(journal).exists():
        return {}
    storage = claims.open_storage(storage_url, journal)
    out = {}
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if summary.study_name.startswith(f"tune {s.experiment}/{s.name}/"):
            st = optuna.load_study(study_name=summary.study_name, storage=storage)
            n = sum(x.state.name in ("COMPLETE", "PRUNED") for x in st.get_trials(deepcopy=False))
            out[summary.study_name] = f"{n} of {s.tune.settings.trials} trials"
    return out
