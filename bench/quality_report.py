"""bench/quality.py report: every proxy's Kendall tau against the ground truth, with the ground truth's own
convergence, reliability and bootstrap spread."""

from __future__ import annotations

import json
import math
import re
import statistics

from quality_common import BUDGET_CSV, LP_BUDGET_CSV, MEASURED_LR, budget_csv, PROXY_CSV, READOUT_CSV, RESULTS, TASKS, _read_list, _unpack, ground_files, lp_ground_truth, read_rows


def run_report(args) -> None:
    files = ground_files(args.distill_steps, args.ground_seed)
    ground, proxies = read_rows(files.csv), read_rows(PROXY_CSV)
    by_seed: dict[tuple[str, str], dict[int, float]] = {}  # (genome, run: steps and lr) -> seed -> score
    for name, row in proxies.items():
        if row.get("long3x_score"):  # the default run of session 3 (360 steps), seed 0
            by_seed[(name, "360")] = {0: float(row["long3x_score"])}
    for row in _read_list(BUDGET_CSV):  # the default run at other budgets, seeds and learning rates
        if row["name"] in proxies and row["status"] == "ok":
            # the first budget runs were all at peak lr 2e-3 and keep their names
            run = row["steps"] + ("" if float(row["lr"]) == MEASURED_LR else f"_lr{float(row['lr']):g}")
            seed = "" if row["seed"] == "0" else f"_seed{row['seed']}"
            proxies[row["name"]][f"cosine{run}{seed}_score"] = row["score"]
            by_seed.setdefault((row["name"], run), {})[int(row["seed"])] = float(row["score"])
    for (name, run), scores in by_seed.items():  # an ensemble of seeds: k runs' mean, at k times the cost
        if len(scores) > 1:
            proxies[name][f"cosine{run}_mean_of_{len(scores)}_seeds_score"] = sum(scores.values()) / len(scores)
    for name, row in read_rows(READOUT_CSV).items():  # the default run's other readouts, as proxies of their own
        if name in proxies and row["status"] == "ok":
            proxies[name] |= {f"readout_{k}_score": v for k, v in row.items() if k.startswith(("lp", "ridge"))}
    tasks = args.gt_tasks.split(",")
    accuracy: dict[str, dict[str, dict[str, float]]] = {}  # task -> half/full -> name -> accuracy
    outcomes: dict[str, dict] = {}  # task -> name -> the full budget's per-dev-example outcomes (lp- tasks)
    # the linear-probe rows of --distill-steps' run, then of each --also-runs run
    runs = [read_rows(run.lp_csv) for run in [files, *args.also_runs]] if any(t.startswith("lp-") for t in tasks) else []
    for task in tasks:
        if task.startswith("lp-"):
            key = task[3:]
            lp = runs[0]
            if args.also_runs:  # several independent runs: the ground truth is their mean (no dev resampling)
                rows = {n: {b: sum(lp_ground_truth(run[n], [task], b) for run in runs) / len(runs) for b in ("half", "full")}
                        for n in lp if all(n in run for run in runs)}
            else:
                rows = {n: {"half": r[f"half_{key}_acc"], "full": r[f"full_{key}_acc"]} for n, r in lp.items()}
                size = json.loads(next(iter(lp.values()))["settings"])["dev_examples"]
                outcomes[task] = {n: _unpack(r[f"full_{key}_correct"], size) for n, r in lp.items()}
        elif task in TASKS:
            rows = {n: {"half": r.get(f"half_{task}_acc"), "full": r.get(f"full_{task}_acc")} for n, r in ground.items()}
        else:
            rows = {n: {"half": r["half_acc"], "full": r["full_acc"]} for n, r in read_rows(RESULTS / f"quality_ground_truth_{task}.csv").items()}
        accuracy[task] = {b: {n: float(v[b]) for n, v in rows.items() if v[b]} for b in ("half", "full")}
    names = [n for n in ground if ground[n]["status"] == "ok" and all(n in accuracy[t]["full"] for t in tasks)]
    for n in names:
        ground[n]["gt"] = sum(accuracy[t]["full"][n] for t in tasks) / len(tasks)
        ground[n]["gt_half"] = sum(accuracy[t]["half"][n] for t in tasks) / len(tasks)
    runs_text = f" over the runs {', '.join(f'{r.steps}:{r.seed}' for r in [files, *args.also_runs])} (steps:seed)" if args.also_runs else ""
    print(f"{len(names)} genomes with ground truth = mean dev accuracy of {', '.join(tasks)}{runs_text}")
    print(f"{'genome':<20} {'params':>7} {'gt':>7} {'half':>7} " + " ".join(f"{t:>14}" for t in tasks))
    for n in sorted(names, key=lambda n: -float(ground[n]["gt"])):
        g = ground[n]
        print(f"{n:<20} {int(g['params']) / 1e6:6.1f}M {float(g['gt']):7.4f} {float(g['gt_half']):7.4f} "
              + " ".join(f"{accuracy[t]['full'][n]:14.4f}" for t in tasks))
    for t in tasks:
        print(f"  {t}: tau half vs full {_tau(accuracy[t]['half'], accuracy[t]['full'], names):.3f}")
    gt = {n: float(ground[n]["gt"]) for n in names}
    half = {n: float(ground[n]["gt_half"]) for n in names}
    print(f"\nconvergence: Kendall tau of the half-budget ranking vs the full one: {_tau(half, gt, names):.3f}")
    shorter = ground_files()
    if files != shorter and shorter.lp_csv.exists() and all(t.startswith("lp-") for t in tasks):
        # the same genomes distilled separately at the first run's budget, graded the same way
        other = read_rows(shorter.lp_csv)
        common = [n for n in names if n in other]
        first = {n: lp_ground_truth(other[n], tasks) for n in common}
        big_common = [n for n in common if int(ground[n]["params"]) > 10e6]
        print(f"against the {shorter.steps}-step run's ground truth (a separate run): tau {_tau(first, gt, common):.3f} "
              f"over {len(common)} genomes, {_tau(first, gt, big_common):.3f} over the {len(big_common)} above 10M params")
    resample = _dev_resampler(outcomes, tasks, names) if len(outcomes) == len(tasks) else None
    if resample is not None:
        big_names = [n for n in names if int(ground[n]["params"]) > 10e6]
        splits = [resample("halves", seed) for seed in range(200)]
        print("reliability: tau between the ground truths of two disjoint halves of the dev set, median of 200 random "
              f"splits: {_median([_tau(*s, names) for s in splits]):.3f} over all {len(names)} genomes, "
              f"{_median([_tau(*s, big_names) for s in splits]):.3f} over the {len(big_names)} above 10M params "
              "(the ground truth's own noise)")
    both = [n for n in names if n in proxies]
    big = [n for n in both if int(ground[n]["params"]) > 10e6]
    columns = sorted({k for n in both for k in _derived(proxies[n])})
    print(f"\nproxies on {len(both)} genomes ({len(big)} above 10M params): Kendall tau vs ground truth"
          + (" [5th, 95th percentile over 1,000 bootstrap draws of the dev set]" if resample else ""))
    draws = [resample("bootstrap", seed)[0] for seed in range(1000)] if resample else []
    resolved = _resolved_pairs(draws, both) if draws else []
    if draws:
        print(f"(pairs the ground truth orders the same way in >= 95 % of the bootstrap draws: {len(resolved)} of "
              f"{len(both) * (len(both) - 1) // 2}; 'agree' = the share of them the proxy orders that way too)")
        print(f"{'proxy':<44} {'all':>6} {'>10M':>6}   {'bootstrap all':>16}  {'bootstrap >10M':>16}  {'agree':>6}")
    else:
        print(f"{'proxy':<44} {'all':>6} {'>10M':>6}")
    table = {column: {n: _derived(proxies[n]).get(column) for n in both} for column in columns}
    for column, term in COMBINED:  # a training-free term beside a distillation score, by the mean of their ranks
        if column in table:
            table[f"{column}+{term}_ranks"] = _rank_mean(table[column], table[term])
    for column in [c for c in table if PARAMS_TERM_OF.fullmatch(c)]:  # the per-candidate sum (session 8)
        table[f"{column}+{PARAMS_WEIGHT:g}ln_params"] = {
            n: None if v is None else v + PARAMS_WEIGHT * math.log(float(proxies[n]["params"]) / 1e6) for n, v in table[column].items()}
    for column in sorted(table):
        values = table[column]
        keep = [n for n in both if values[n] is not None]
        keep_big = [n for n in big if values[n] is not None]
        line = f"{column:<44} {_tau(values, gt, keep):6.3f} {_tau(values, gt, keep_big):6.3f}"
        if draws:
            spread = [sorted(_tau(values, d, subset) for d in draws) for subset in (keep, keep_big)]
            line += "   " + "  ".join(f"[{s[50]:6.3f}, {s[949]:6.3f}]" for s in spread)
            judged = [(a, b) for a, b in resolved if values.get(a) is not None and values.get(b) is not None]
            line += f"  {sum(values[a] > values[b] for a, b in judged) / max(1, len(judged)):6.3f}"
        print(line + _partial(keep, both))
    _seed_means(table, gt, both, big)
    _reference_pairs(gt, table, both)
    if args.also_runs and all(t.startswith("lp-") for t in tasks):
        _noise_ceiling([files, *args.also_runs], runs, tasks, table, both, big)
    _fronts(gt, table, both)
    print("\nASHA: of the genomes in the top third at a run's last checkpoint, how many a first-rung cut "
          "(keep the top third) would have stopped; tau of the first rung vs the last")
    for (run, seeds) in sorted({(k[1], len(v)) for k, v in by_seed.items() if len(v) > 1}):
        # repeats: the rung is the first run's end (seed 0), the last rung the mean of all runs
        names_here = [n for n in proxies if len(by_seed.get((n, run), {})) == seeds]
        if len(names_here) < 6:
            continue
        first = {n: by_seed[(n, run)][0] for n in names_here}
        last = {n: sum(by_seed[(n, run)].values()) / seeds for n in names_here}
        k = max(1, len(names_here) // 3)
        top_last = set(sorted(names_here, key=lambda n: -last[n])[:k])
        kept = set(sorted(names_here, key=lambda n: -first[n])[:k])
        print(f"  {run.replace('_lr', ' steps at lr ') if '_lr' in run else run + ' steps'} x {seeds} seeds, rung at the end of seed 0: {len(top_last - kept)}/{k} of the final top "
              f"third stopped; tau {_tau(first, last, names_here):.3f}")
    for label in ("quick", "default_bf16", "long3x"):
        curves = {n: {int(k): v for k, v in json.loads(proxies[n][f"{label}_curve"]).items()} for n in proxies
                  if proxies[n].get(f"{label}_curve")}  # fmt: skip
        if len(curves) < 6:
            continue
        for rung_index in range(len(next(iter(curves.values()))) - 1):
            rung = sorted(next(iter(curves.values())))[rung_index]
            first = {n: c[rung] for n, c in curves.items()}
            last = {n: c[max(c)] for n, c in curves.items()}
            k = max(1, len(curves) // 3)
            top_last = set(sorted(curves, key=lambda n: -last[n])[:k])
            kept = set(sorted(curves, key=lambda n: -first[n])[:k])
            print(f"  {label:<14} rung at step {rung:>4}: {len(top_last - kept)}/{k} of the final top third stopped; "
                  f"tau {_tau(first, last, list(curves)):.3f}")


def _noise_ceiling(runs: list, rows: list[dict], tasks: list[str], table: dict[str, dict], names: list[str], big: list[str]) -> None:
    """Leave one run out: how well each run ranks the mean of the others (what one more long run
    would score), and each proxy against the same means. A proxy at that line ranks long-run quality
    as well as another long run does; no proxy can be shown to do better with these runs.
    `rows`: each run's linear-probe rows, in the order of `runs`."""
    gts = [{n: lp_ground_truth(run[n], tasks) for n in names if n in run} for run in rows]
    names = [n for n in names if all(n in gt for gt in gts)]
    big = [n for n in big if n in names]
    others = [{n: sum(gt[n] for j, gt in enumerate(gts) if j != i) / (len(gts) - 1) for n in names} for i in range(len(gts))]
    print(f"\nnoise ceiling, leaving one run out ({len(names)} genomes, {len(big)} above 10M): Kendall tau against the "
          "mean of the other runs, all / >10M")
    if len(gts) > 2:  # each pair of runs, e.g. two seeds at one budget against two budgets
        for i in range(len(gts)):
            for j in range(i + 1, len(gts)):
                pair = f"run {runs[i].steps}:{runs[i].seed} against run {runs[j].steps}:{runs[j].seed}"
                print(f"  {pair:<44} {_tau(gts[i], gts[j], names):6.3f} {_tau(gts[i], gts[j], big):6.3f}")
    ceiling = [(_tau(gts[i], others[i], names), _tau(gts[i], others[i], big)) for i in range(len(gts))]
    for run, (every, large) in zip(runs, ceiling):
        print(f"  {f'run {run.steps}:{run.seed} against the others':<44} {every:6.3f} {large:6.3f}")
    mean = [sum(c[k] for c in ceiling) / len(ceiling) for k in (0, 1)]
    print(f"  {'one long run (mean of the above)':<44} {mean[0]:6.3f} {mean[1]:6.3f}")
    _split_means(gts, names, big)
    for column in sorted(table):
        values = table[column]
        keep = [n for n in names if values.get(n) is not None]
        keep_big = [n for n in big if values.get(n) is not None]
        taus = [(_tau(values, other, keep), _tau(values, other, keep_big)) for other in others]
        print(f"  {column:<44} {sum(t[0] for t in taus) / len(taus):6.3f} {sum(t[1] for t in taus) / len(taus):6.3f}"
              + _partial(keep, names))


def _split_means(gts: list[dict[str, float]], names: list[str], big: list[str]) -> None:
    """What a proxy worth k long runs would read: the mean of k runs against the mean of the others,
    over every split; and, from the halves, roughly what a noise-free proxy would read against the
    mean of all the runs (Kendall tau to Pearson by sin(pi tau / 2), Spearman-Brown to all the runs,
    and back: an estimate that assumes Gaussian noise, which the runs' loss spikes are not)."""
    from itertools import combinations

    n = len(gts)
    if n < 4:
        return
    halves = (0.0, 0.0)
    for k in range(2, n // 2 + 1):
        taus = []
        for chosen in combinations(range(n), k):
            a = {g: sum(gts[i][g] for i in chosen) / k for g in names}
            b = {g: sum(gts[i][g] for i in range(n) if i not in chosen) / (n - k) for g in names}
            taus.append((_tau(a, b, names), _tau(a, b, big)))
        every, large = (sum(t[j] for t in taus) / len(taus) for j in (0, 1))
        print(f"  {f'the mean of {k} runs against the other {n - k}':<44} {every:6.3f} {large:6.3f}")
        halves = (every, large)

    def noise_free(tau_half: float) -> float:
        r_half = math.sin(math.pi * tau_half / 2)
        return 2 / math.pi * math.asin(math.sqrt(max(0.0, 2 * r_half / (1 + r_half))))

    print(f"  {f'a noise-free proxy, mean of all {n} (estimate)':<44} {noise_free(halves[0]):6.3f} {noise_free(halves[1]):6.3f}")


def _seed_means(table: dict[str, dict], gt: dict[str, float], names: list[str], big: list[str]) -> None:
    """The mean of the taus of a proxy's two seeds (a column and its `_seed1` twin): one proxy seed's luck halved."""
    pairs = [(c, c.replace("_score", "_seed1_score", 1)) for c in sorted(table) if "_seed1" not in c and "_score" in c]
    pairs = [(a, b) for a, b in pairs if b in table and all(table[c].get(n) is not None for c in (a, b) for n in names)]
    if not pairs:
        return
    print("\nmean of the two proxy seeds' taus (seed 0 and seed 1), all / >10M")
    for a, b in pairs:
        taus = [(_tau(table[c], gt, names), _tau(table[c], gt, big)) for c in (a, b)]
        print(f"  {a:<44} {(taus[0][0] + taus[1][0]) / 2:6.3f} {(taus[0][1] + taus[1][1]) / 2:6.3f}")


REFERENCES = ("mobilebert", "mobilebert-tiny", "teacher-shape")


def _reference_pairs(gt: dict[str, float], table: dict[str, dict], names: list[str]) -> None:
    """The orderings the issue asks for: MobileBERT, MobileBERT-TINY and the teacher's shape above
    every 2-layer genome the ground truth puts below them. How many of those pairs each proxy keeps."""
    from quality_common import genome_set

    pairs = _reference_pair_list(gt, genome_set(), names)
    if not pairs:
        return
    print(f"\nreference pairs: the ground truth puts a reference above a 2-layer genome in {len(pairs)} pairs; "
          "how many each proxy orders the same way, and the ones it misses")
    for column in sorted(table):
        values = table[column]
        if any(values.get(n) is None for pair in pairs for n in pair):
            continue
        missed = _misses(pairs, values)
        print(f"  {column:<44} {len(pairs) - len(missed):>2}/{len(pairs)}" + (f"  misses {', '.join(missed)}" if missed else ""))


def _reference_pair_list(gt: dict[str, float], genomes: dict, names: list[str]) -> list[tuple[str, str]]:
    """(reference, 2-layer genome) pairs where the ground truth puts the reference above."""
    shallow = [n for n in names if n in genomes and genomes[n].num_layers == 2]
    return [(r, s) for r in REFERENCES if r in names for s in shallow if gt[r] > gt[s]]


def _misses(pairs: list[tuple[str, str]], values: dict) -> list[str]:
    """The reference pairs a proxy orders the other way (pairs it has no value for are skipped)."""
    return [f"{r} < {s}" for r, s in pairs if values.get(r) is not None and values.get(s) is not None and values[r] <= values[s]]


# the baseline, and the default runs: 180 and 240 steps at lr 2e-3 (sessions 5-6), 240 at 1e-3 (session 7), 360
# (sessions 3-4), and the pre-registered sums with ln params (session 8)
FRONT_PROXIES = ("params", "cosine180_score", "cosine240_score", "cosine240_lr0.001_score", "long3x_score",
                 "cosine240_score+0.05ln_params", "cosine180_score+0.05ln_params")


def _partial(kept: list[str], names: list[str]) -> str:
    """A proxy measured on only some of the genomes (a run still going): its tau is over those alone."""
    return f"  (only {len(kept)} of {len(names)} genomes)" if len(kept) < len(names) else ""


def _fronts(gt: dict[str, float], table: dict[str, dict], names: list[str]) -> None:
    """What a search would keep: the Pareto front of (predicted Pixel 4 latency, quality) over the
    genomes, by the ground truth and by each proxy, and how many of the ground truth's front a proxy's holds."""
    from quality_common import genome_set

    from nas.errors import NasError
    from nas.search.objectives import CheapScorer

    metric = "latency_ms@pixel4"
    try:
        scorer = CheapScorer([metric])
    except NasError as err:  # no pixel4 profile installed
        print(f"\nfronts: skipped ({err})")
        return
    genomes = genome_set()
    latency = {n: scorer.scores(genomes[n])[metric] for n in names if n in genomes}

    def front(quality: dict) -> list[str]:
        keep = [n for n in latency if quality.get(n) is not None]
        return sorted((n for n in keep if not any(latency[m] <= latency[n] and quality[m] >= quality[n]
                                                   and (latency[m], quality[m]) != (latency[n], quality[n]) for m in keep)),
                      key=latency.get)

    truth = front(gt)
    print(f"\nPareto fronts of ({metric}, quality) over these genomes; ground truth's: "
          + ", ".join(f"{n} {latency[n]:.1f} ms" for n in truth))
    for column in FRONT_PROXIES:
        if column in table:
            found = front(table[column])
            hits = len(set(found) & set(truth))
            print(f"  {column:<30} holds {hits} of its {len(truth)}, and {len(found) - hits} it does not; its own: "
                  + ", ".join(f"{n} {latency[n]:.1f} ms" for n in found))


def _dev_resampler(outcomes: dict, tasks: list[str], names: list[str]):
    """resample(kind, seed) -> ground truths recomputed from the dev examples' outcomes: ("bootstrap")
    one draw with replacement, or ("halves") the two halves of a random split."""
    import numpy as np

    size = len(next(iter(outcomes[tasks[0]].values())))

    def mean_accuracy(index) -> dict[str, float]:
        return {n: float(np.mean([outcomes[t][n][index].mean() for t in tasks])) for n in names}

    def resample(kind: str, seed: int):
        rng = np.random.default_rng(seed)
        if kind == "bootstrap":
            return (mean_accuracy(rng.integers(0, size, size)),)
        order = rng.permutation(size)
        return mean_accuracy(order[: size // 2]), mean_accuracy(order[size // 2 :])

    return resample


def _resolved_pairs(draws: list[dict[str, float]], names: list[str]) -> list[tuple[str, str]]:
    """(better, worse) pairs whose ground-truth order holds in at least 95 % of the bootstrap draws."""
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            share = sum(d[a] > d[b] for d in draws) / len(draws)
            if share >= 0.95:
                pairs.append((a, b))
            elif share <= 0.05:
                pairs.append((b, a))
    return pairs


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


COMBINED = [("long3x_score", "params")]  # chosen before the 1280-step ground truth was read
# cosine + PARAMS_WEIGHT * ln(params / 1M), per candidate, for the default run's budget runs
# (pre-registered in docs/quality.md before the fifth ground-truth run was read)
PARAMS_WEIGHT = 0.05
PARAMS_TERM_OF = re.compile(r"cosine(180|240)(_lr[0-9.e-]+)?(_seed1)?_score")


def _rank_mean(a: dict, b: dict) -> dict:
    """Each genome's mean rank under two proxies (None where either is missing); no fitted weight."""
    keep = [n for n in a if a[n] is not None and b.get(n) is not None]
    ranks = [{n: i for i, n in enumerate(sorted(keep, key=values.get))} for values in (a, b)]
    return {n: (ranks[0][n] + ranks[1][n]) / 2 if n in ranks[0] else None for n in a}


def _derived(row: dict) -> dict[str, float]:
    """Every proxy a row supports, oriented so that higher means better."""
    out: dict[str, float] = {}
    for key, value in row.items():
        if value in ("", None) or key == "name":
            continue
        if key.endswith("_score"):
            out[key] = float(value)
        elif key.endswith("_heldout"):
            out[f"-{key}"] = -float(value)
        elif key.endswith("_curve"):
            curve = {int(k): v for k, v in json.loads(value).items()}
            if len(curve) >= 3:
                out[f"{key[:-6]}_extrapolated"] = extrapolate(curve, EXTRAPOLATE_TO)
    if row.get("params"):
        out["params"] = float(row["params"])
        out["flops"] = float(row["flops"])
    return out


EXTRAPOLATE_TO = 640  # the ground truth's distillation budget


def extrapolate(curve: dict[int, float], to_step: int) -> float:
    """A learning-curve extrapolation: the least-squares fit of s(t) = a - b * t^-c (c on a grid) at ``to_step``.

    Uses the second half of the checkpoints: the first ones sit in the warm-up, where the score can dip.
    """
    import numpy as np

    steps = sorted(curve)[len(curve) // 2 - 1 :]
    t = np.array(steps, dtype=float)
    y = np.array([curve[k] for k in steps])
    best = None
    for c in (0.25, 0.5, 1.0, 2.0):
        x = np.stack([np.ones_like(t), -(t ** -c)], axis=1)
        (a, b), *_ = np.linalg.lstsq(x, y, rcond=None)
        error = float(((x @ np.array([a, b]) - y) ** 2).sum())
        if best is None or error < best[0]:
            best = (error, a - b * to_step ** -c)
    return float(best[1])


# session 12's candidates, as pre-registered: (steps, stop_fraction, lp_examples, seed), read at seeds no
# ground-truth run has; F at seed 8 is the shipped score's second seed, run after the rule was applied.
# "+retry": F as DistillConfig(divergence_retries=1) reads it (session 13): a diverged run's retry at
# half the rate (a budgets row at lr 1e-3) in place of its divergence.
CANDIDATES = {"E": (320, 0.5, 8000, 7), "F": (320, 1.0, 8000, 7), "F8": (320, 1.0, 8000, 8), "F9": (320, 1.0, 8000, 9),
              "F10": (320, 1.0, 8000, 10), "F+retry": (320, 1.0, 8000, 7), "F8+retry": (320, 1.0, 8000, 8),
              "F9+retry": (320, 1.0, 8000, 9), "F10+retry": (320, 1.0, 8000, 10), "G": (320, 1.0, 8000, 7), "G8": (320, 1.0, 8000, 8)}
CANDIDATE_LR = {"G": 1e-3, "G8": 1e-3}  # session 15's screen: F at half the peak rate; the others at MEASURED_LR


DIVERGED = -1.0  # a run that diverged ranks below every scored genome: the search marks it FAIL and never fronts it


F_SEEDS = ("F", "F8", "F9", "F10")  # the shipped score (F) at seeds 7-10: one draw each, nothing chosen on any
GOAL = (0.8, 0.7)  # issue 8: Kendall tau over all genomes, and over those above 10M
TOP_PICKS = 10  # how many of a score's first genomes are read for what they are worth


def _seeds_of_f(candidates: dict, gt: dict, params: dict) -> None:
    """F's seeds side by side on the genomes each has reached: each run's tau, their mean (what one
    run of the score is expected to read), the two-run score (the mean of two seeds' scores,
    ``repeats=2``) for every pair and its mean, and the mean of all of them. A diverged run is read
    at its retry at half the rate, as the product scores it."""
    from itertools import combinations, permutations

    seeds = [k for k in F_SEEDS if k in candidates]
    if len(seeds) < 2:
        return
    candidates = {k: candidates.get(f"{k}+retry", candidates[k]) for k in seeds}  # +retry only where a retry changed something
    names = [n for n in gt if all(n in candidates[k] for k in seeds)]
    big = [n for n in names if params[n] > 10e6]

    def taus(values: dict) -> tuple[float, float]:
        return _tau(values, gt, names), _tau(values, gt, big)

    def mean_of(keys) -> dict[str, float]:
        return {n: sum(candidates[k][n] for k in keys) / len(keys) for n in names}

    def average(found: list[tuple[float, float]]) -> tuple[float, float]:  # the mean of several (all, above 10M) taus
        return sum(p[0] for p in found) / len(found), sum(p[1] for p in found) / len(found)

    def meets(pair: tuple[float, float]) -> bool:
        return pair[0] >= GOAL[0] and pair[1] >= GOAL[1]

    def line(label: str, pair: tuple[float, float]) -> str:
        return f"  {label}: {pair[0]:.3f} / {pair[1]:.3f}" + (" (meets the goal)" if meets(pair) else "")

    seed_of = {k: CANDIDATES[k][3] for k in seeds}
    print(f"F at seeds {', '.join(str(seed_of[k]) for k in seeds)} on the {len(names)} genomes every one has reached "
          f"(Kendall tau over all / the {len(big)} above 10M; goal {GOAL[0]:g} / {GOAL[1]:g}; a diverged run read at its retry):")
    single = {k: taus(candidates[k]) for k in seeds}
    for k, pair in single.items():
        print(line(f"one run, seed {seed_of[k]}", pair))
    print(line(f"one run, mean of the {len(seeds)} seeds' taus", average(list(single.values()))))
    pairs = {(a, b): taus(mean_of((a, b))) for a, b in combinations(seeds, 2)}  # two runs a candidate: twice the cost
    for (a, b), pair in pairs.items():
        print(line(f"two runs (seeds {seed_of[a]} + {seed_of[b]})", pair))
    print(line(f"two runs, mean of the {len(pairs)} pairs' taus", average(list(pairs.values())))
          + f"; {sum(meets(p) for p in pairs.values())} of {len(pairs)} pairs meet it")
    for k in range(3, len(seeds) + 1):  # k runs a candidate, over every choice of k seeds
        sets = [taus(mean_of(chosen)) for chosen in combinations(seeds, k)]
        print(line(f"{k} runs, mean of the {len(sets)} choices' taus", average(sets))
              + f"; {sum(meets(p) for p in sets)} of {len(sets)} meet it")
    # What a user gets from the ranking: the ground truth of the genomes a k-run score puts first,
    # beside the ground truth's own best; ranks further down matter little to a search's front
    best = sorted(names, key=lambda n: -gt[n])[:TOP_PICKS]
    print(f"  the mean ground truth of the {TOP_PICKS} genomes each score puts first (the ground truth's own {TOP_PICKS}: "
          f"{sum(gt[n] for n in best) / TOP_PICKS:.4f}), and how many of them are among the ground truth's {TOP_PICKS}:")
    for k in range(1, len(seeds) + 1):
        picks = [sorted(names, key=lambda n: -scores[n])[:TOP_PICKS] for scores in (mean_of(c) for c in combinations(seeds, k))]
        worth = [sum(gt[n] for n in p) / TOP_PICKS for p in picks]
        shared = [len(set(p) & set(best)) for p in picks]
        print(f"    {k} run(s), mean of {len(picks)} choice(s): {sum(worth) / len(worth):.4f} ({min(worth):.4f}-{max(worth):.4f}), "
              f"{sum(shared) / len(shared):.1f} of the {TOP_PICKS}")
    by_size = sorted(names, key=lambda n: -params[n])[:TOP_PICKS]  # the baseline: the largest genomes
    print(f"    parameter count: {sum(gt[n] for n in by_size) / TOP_PICKS:.4f}, {len(set(by_size) & set(best))} of the {TOP_PICKS}")
    # With two runs and ASHA, the first run's end is a rung: a cut there (keep a third) must not stop
    # what the two-run score ranks high at the end (issue 8's ASHA clause)
    third = len(names) // 3
    stopped = []
    for a, b in permutations(seeds, 2):
        kept = set(sorted(names, key=lambda n: -candidates[a][n])[:third])
        final = mean_of((a, b))
        stopped.append(sum(n not in kept for n in sorted(names, key=lambda n: -final[n])[:third]))
    print(f"  a cut at the first run's end (keep the top {third} of {len(names)}) would stop {min(stopped)}-{max(stopped)} "
          f"(mean {sum(stopped) / len(stopped):.1f}) of the {third} the two-run score puts in its top third, "
          f"over the {len(stopped)} orders of the pairs")


def _half_rate(candidates: dict, gt: dict, params: dict) -> None:
    """G (F at half the peak rate) beside F at the same seeds, on the genomes G has reached: each
    seed's tau, and how closely the two seeds of each agree (a quieter run agrees more)."""
    for g, f in (("G", "F"), ("G8", "F8")):
        if g in candidates and f in candidates:
            names = [n for n in candidates[g] if n in candidates[f] and n in gt]
            big = [n for n in names if params[n] > 10e6]
            print(f"G (peak lr {CANDIDATE_LR[g]:g}) against F (lr {MEASURED_LR:g}) at seed {CANDIDATES[g][3]} on the {len(names)} "
                  f"genomes G has reached: {_tau(candidates[g], gt, names):.3f} / {_tau(candidates[f], gt, names):.3f}, "
                  f"above 10M ({len(big)}) {_tau(candidates[g], gt, big):.3f} / {_tau(candidates[f], gt, big):.3f}")
    if all(k in candidates for k in ("G", "G8", "F", "F8")):
        names = [n for n in candidates["G8"] if all(n in candidates[k] for k in ("G", "F", "F8")) and n in gt]
        print(f"seed 7 against seed 8 on the {len(names)} genomes both of G's seeds reached: G {_tau(candidates['G'], candidates['G8'], names):.3f}, "
              f"F {_tau(candidates['F'], candidates['F8'], names):.3f}; the mean of the two seeds' taus: G "
              f"{(_tau(candidates['G'], gt, names) + _tau(candidates['G8'], gt, names)) / 2:.3f}, "
              f"F {(_tau(candidates['F'], gt, names) + _tau(candidates['F8'], gt, names)) / 2:.3f}")


CROSSFIT_CSV = budget_csv("lp", 1.0, 8000, crossfit=True)  # budgets --crossfit


def _crossfit(gt: dict, params: dict, retried: dict[int, dict]) -> None:
    """Session 16's test 3: F's runs again, each student read one way (F) and cross-fitted, at each
    seed on the genomes it reached; a paired comparison, since both readings are of the same weights.
    A diverged run reads its retry at half the rate, read both ways where this file has it, else
    F's retry as shipped (``retried``, by seed) both ways."""
    everything = [r for r in _read_list(CROSSFIT_CSV) if r["name"] in gt and r["steps"] == "320"]
    rows = [r for r in everything if float(r["lr"]) == MEASURED_LR]
    if not rows:
        return
    retries = {(r["name"], int(r["seed"])): r for r in everything if float(r["lr"]) == MEASURED_LR / 2 and r["status"] == "ok"}
    readings: dict[int, dict[str, dict[str, float]]] = {}
    for r in rows:
        seed = int(r["seed"])
        retry = retries.get((r["name"], seed))
        for way, column in (("one way", "score_again"), ("cross-fitted", "score_crossfit")):
            if r["status"] == "ok":
                value = float(r[column])
            else:
                value = float(retry[column]) if retry else retried.get(seed, {}).get(r["name"], DIVERGED)
            readings.setdefault(seed, {}).setdefault(way, {})[r["name"]] = value
    print("test 3 (session 16): F's runs read one way and cross-fitted (the same students; tau over all / above 10M):")
    for seed, ways in sorted(readings.items()):
        names = sorted(ways["one way"])
        big = [n for n in names if params[n] > 10e6]
        line = ", ".join(f"{way} {_tau(v, gt, names):.3f} / {_tau(v, gt, big):.3f}" for way, v in ways.items())
        print(f"  seed {seed} on {len(names)} genomes: {line}; {_paired_bootstrap(ways, gt, names, big)}")
    seeds = sorted(readings)
    if len(seeds) > 1:
        a, b = seeds[:2]
        both = [n for n in readings[a]["one way"] if n in readings[b]["one way"]]
        for way in ("one way", "cross-fitted"):
            first, second = readings[a][way], readings[b][way]
            spread = statistics.pstdev([first[n] - second[n] for n in both if DIVERGED not in (first[n], second[n])])
            print(f"  {way}: seed {a} against seed {b} on the {len(both)} both reached: tau {_tau(first, second, both):.3f}, "
                  f"score difference {spread:.4f} (standard deviation)")


def _paired_bootstrap(ways: dict[str, dict[str, float]], gt: dict, names: list[str], big: list[str], draws: int = 2000) -> str:
    """How often the cross-fitted reading's tau gain over the one-way reading is zero or less when
    the genomes are resampled with replacement (the same resample for both readings)."""
    import random

    one, cross = ways["one way"], ways["cross-fitted"]
    shares = []
    for subset in (names, big):
        rng = random.Random(0)
        gains = [_tau(cross, gt, drawn) - _tau(one, gt, drawn)
                 for drawn in ([rng.choice(subset) for _ in subset] for _ in range(draws))]
        shares.append(sum(g <= 0 for g in gains) / draws)
    return f"P(gain <= 0) over {draws} resamples of the genomes {shares[0]:.2f} / {shares[1]:.2f}"


def _lp_rows(path, steps: int, seed: int, genomes: dict, retried: bool = False, lr: float = MEASURED_LR) -> dict[str, float]:
    """One read-out's scores at a budget and seed (peak lr 2e-3), from a ``budgets --score lp`` CSV;
    a diverged run reads ``DIVERGED``, or with ``retried`` its run at half the rate where there is one."""
    rows = [row for row in _read_list(path) if row["name"] in genomes and row["status"] in ("ok", "diverged")
            and row["steps"] == str(steps) and row["seed"] == str(seed)]

    def read(lr: float) -> dict[str, float]:
        return {row["name"]: float(row["score"]) if row["status"] == "ok" else DIVERGED for row in rows if float(row["lr"]) == lr}

    values = read(lr)
    if retried:
        values |= {n: v for n, v in read(lr / 2).items() if values.get(n) == DIVERGED}
    return values


def _like_for_like(gt_runs: dict[str, dict], lp_seeded: dict, candidates: dict, params: dict, genomes: dict) -> None:
    """Each single run against the ground truth of the runs that share no seed with it: a run at
    seed s shares its initialisation and batches with ground-truth run s, so s is left out of the
    mean it is judged by. Beside the proxies: one ground-truth run's own half-budget snapshot and
    full budget (its noise ceiling), and by hidden width how many places each reading moves genomes."""
    names = [n for n, runs in gt_runs.items() if len({s for s, _, _ in runs}) > 1 and all(n in v for v in lp_seeded.values())]
    if len(names) < 3:
        return

    def others(seed: int) -> dict[str, float]:
        return {n: sum(g for s, g, _ in gt_runs[n] if s != seed) / sum(1 for s, _, _ in gt_runs[n] if s != seed) for n in names}

    big = [n for n in names if params[n] > 10e6]
    print(f"\nlike against like: each run against the mean ground truth of the runs without its seed ({len(names)} genomes; "
          f"all / the {len(big)} above 10M)")
    readings, ceilings = {}, []
    shared = sorted(set.intersection(*({s for s, _, _ in gt_runs[n]} for n in names)))  # the seeds every genome has a run of
    for seed in shared:
        own = {n: next(g for s, g, _ in gt_runs[n] if s == seed) for n in names}
        half = {n: next(h for s, _, h in gt_runs[n] if s == seed) for n in names}
        readings[f"the ground truth's seed-{seed} run, full budget (the noise ceiling)"] = (own, others(seed))
        ceilings.append((_tau(own, others(seed), names), _tau(own, others(seed), big)))
        readings[f"the ground truth's seed-{seed} run at half its budget"] = (half, others(seed))
        if seed in lp_seeded:
            readings[f"D, seed {seed}"] = (lp_seeded[seed], others(seed))
    complete = {label: values for label, values in candidates.items() if all(n in values for n in names)}
    for label, values in complete.items():
        seed = CANDIDATES[label][3]
        readings[f"{label}, seed {seed} (no ground-truth run has it)"] = (values, others(seed))
    for label, (values, truth) in readings.items():
        print(f"  {label}: {_tau(values, truth, names):.3f} / {_tau(values, truth, big):.3f}")
    if len(ceilings) > 1:
        print(f"  the noise ceiling, mean over the {len(ceilings)} seeds: {sum(a for a, _ in ceilings) / len(ceilings):.3f} / "
              f"{sum(b for _, b in ceilings) / len(ceilings):.3f}")
    truth = others(-1)
    place = _places({n: truth[n] for n in names})
    widths = sorted({genomes[n].hidden_size for n in names})
    print("  places each reading moves genomes up (-) or down (+) against all runs' mean, by hidden width: "
          + ", ".join(f"{w} ({sum(genomes[n].hidden_size == w for n in names)})" for w in widths))
    for label, values in [("D, seed 0", lp_seeded[0]), ("D, seed 1", lp_seeded[1]), *complete.items()]:
        ranked = _places({n: values[n] for n in names})
        moves = [sum(ranked[n] - place[n] for n in names if genomes[n].hidden_size == w) / sum(genomes[n].hidden_size == w for n in names)
                 for w in widths]
        print(f"    {label}: " + ", ".join(f"{m:+.1f}" for m in moves))


def _noise(gt_runs: dict[str, list], candidates: dict, params: dict) -> None:
    """How far one run of a genome moves from the next (the spread, over genomes, of the difference
    between two seeds' values), for the ground truth and for F; and whether the ground truth has
    converged: its ranking at half its steps against the full run, per seed and for the mean."""
    from statistics import pstdev

    by_seed = {n: {s: (full, half) for s, full, half in runs} for n, runs in gt_runs.items()}
    seeds = sorted({s for runs in by_seed.values() for s in runs})
    print("\nrun to run: the standard deviation over genomes of (one run's value - another's) for the same genome")
    for i, a in enumerate(seeds):
        for b in seeds[i + 1:]:
            both = [n for n, runs in by_seed.items() if a in runs and b in runs]
            if len(both) >= 3:
                spread = pstdev([by_seed[n][a][0] - by_seed[n][b][0] for n in both])
                print(f"  the ground truth, seed {a} against seed {b} ({len(both)} genomes): {spread:.4f}")
    def scored(*keys: str) -> list[str]:  # the genomes every one of these runs scored
        return [n for n in candidates[keys[0]] if all(candidates[k].get(n, DIVERGED) != DIVERGED for k in keys)]

    for a, b in (("F", "F8"), ("G", "G8")):  # and G (half F's peak rate) beside F on the genomes G's seeds share
        if a in candidates and b in candidates:
            both = scored(a, b)
            line = f"  {a}, seed 7 against seed 8 ({len(both)} genomes): {pstdev([candidates[a][n] - candidates[b][n] for n in both]):.4f}"
            if a == "G" and "F" in candidates and "F8" in candidates:
                both = scored(a, b, "F", "F8")
                line += (f"; on the {len(both)} both G and F have: G {pstdev([candidates[a][n] - candidates[b][n] for n in both]):.4f}, "
                         f"F {pstdev([candidates['F'][n] - candidates['F8'][n] for n in both]):.4f}")
            print(line)
    print("the ground truth's convergence: its ranking at half the steps against the full run (all / above 10M)")
    for seed in seeds:
        names = [n for n, runs in by_seed.items() if seed in runs]
        half = {n: by_seed[n][seed][1] for n in names}
        full = {n: by_seed[n][seed][0] for n in names}
        big = [n for n in names if params[n] > 10e6]
        print(f"  seed {seed} ({len(names)} genomes): {_tau(half, full, names):.3f} / {_tau(half, full, big):.3f}")
    names = [n for n, runs in by_seed.items() if len(runs) > 1]
    half = {n: sum(h for _, h in by_seed[n].values()) / len(by_seed[n]) for n in names}
    full = {n: sum(f for f, _ in by_seed[n].values()) / len(by_seed[n]) for n in names}
    big = [n for n in names if params[n] > 10e6]
    print(f"  the mean of each genome's runs ({len(names)} genomes with two or more): {_tau(half, full, names):.3f} / "
          f"{_tau(half, full, big):.3f}")


SPIKE = 1.2  # a held-out loss this far above its lowest so far: a run that nearly diverged


def _spiked(files) -> dict[str, float]:
    """The genomes of one ground-truth run whose held-out distillation loss rose over SPIKE times its
    lowest earlier checkpoint (unstable runs the divergence check, 10x, let through), and how far."""
    found = {}
    for name, row in read_rows(files.csv).items():
        curve = list(json.loads(row["heldout_curve"]).values()) if row.get("heldout_curve") else []
        rise = max((curve[i] / min(curve[:i]) for i in range(1, len(curve))), default=0.0)
        if rise > SPIKE:
            found[name] = rise
    return found


def _spikes(spikes: list, skipped: bool) -> None:
    """List the ground-truth runs that spiked (``(files, _spiked(files))`` pairs), and whether this report kept them in the mean."""
    found = [f"{name} ({files.steps}:{files.seed}, {rise:.2f}x)" for files, spiked in spikes for name, rise in spiked.items()]
    print(f"\nground-truth runs whose held-out loss rose over {SPIKE:g}x its lowest so far "
          f"({'left out of the mean: --skip-spiked' if skipped else 'kept in the mean'}): " + (", ".join(found) if found else "none"))


def _places(values: dict[str, float]) -> dict[str, int]:
    """Each genome's place (1 = the highest value) in a ranking."""
    return {n: i + 1 for i, n in enumerate(sorted(values, key=lambda n: -values[n]))}


def _tau(values: dict, gt: dict, names: list[str]) -> float:
    from scipy.stats import kendalltau

    if len(names) < 3:
        return float("nan")
    return float(kendalltau([values[n] for n in names], [gt[n] for n in names]).statistic)


def run_front_report(args) -> None:
    """Genomes from outside the set (a search's front, a held-out draw: `ground --genome-files --tag`)
    beside the set: their ground truth (the mean over the tag's seeds) and their place by the ground
    truth and by the default score, so one can see whether the score ranks genomes it was not chosen
    on as the ground truth does. ``--tag`` may name several runs (``front8,band8``); ``--latency MIN
    MAX`` asks which genome of that pixel4 band the score would hand a user, and its true place."""
    from quality_common import genome_set, selected

    import nas
    from nas.search.objectives import CheapScorer

    tasks = args.gt_tasks.split(",")
    tags = [t for t in args.tag.split(",") if t]
    set_files = [ground_files(args.distill_steps, args.ground_seed), *args.also_runs]
    tagged_files = [ground_files(args.distill_steps, seed, tag) for tag in tags for seed in args.seeds]
    runs = [read_rows(run.lp_csv) for run in set_files]
    names = [n for n in runs[0] if all(n in run for run in runs)]
    tagged_runs = [(files.seed, read_rows(files.lp_csv)) for files in tagged_files]
    spikes = [(files, _spiked(files)) for files in set_files + tagged_files]  # read once: skipped here, listed at the end
    if args.skip_spiked:  # a sensitivity check: each genome's ground truth over its other runs
        for (_, spiked), rows in zip(spikes, runs + [rows for _, rows in tagged_runs]):
            for n in spiked:
                rows.pop(n, None)
    gt = {n: sum(lp_ground_truth(run[n], tasks) for run in runs if n in run) / sum(n in run for run in runs) for n in names}
    known = genome_set()
    genomes = {n: known[n] for n in names}
    extra = selected(args)
    tagged = [rows for _, rows in tagged_runs]
    per_seed = {n: [lp_ground_truth(run[n], tasks) for run in tagged if n in run] for n in extra}
    gt_runs: dict[str, list] = {}  # (seed, full, half) of every run at --distill-steps, for the like-against-like figures
    same_budget = [(f.seed, rows) for f, rows in zip(set_files, runs) if f.steps == args.distill_steps] + tagged_runs
    for seed, rows in same_budget:
        for n, row in rows.items():
            if n in names or n in extra:
                gt_runs.setdefault(n, []).append((seed, lp_ground_truth(row, tasks), lp_ground_truth(row, tasks, "half")))
    for n, values in per_seed.items():
        if values:
            gt[n] = sum(values) / len(values)
            genomes[n] = extra[n]
    params = {n: nas.count(a).params for n, a in genomes.items()}

    def cosine_at(lr: float, seed: int = 0) -> dict[str, float]:  # the 240-step default run's cosine
        return {row["name"]: float(row["score"]) for row in _read_list(BUDGET_CSV) if row["name"] in genomes
                and row["status"] == "ok" and row["steps"] == "240" and row["seed"] == str(seed) and float(row["lr"]) == lr}

    def with_term(cosine: dict[str, float], weight: float = PARAMS_WEIGHT) -> dict[str, float]:
        return {n: v + weight * math.log(params[n] / 1e6) for n, v in cosine.items()}

    cosine = {seed: cosine_at(MEASURED_LR, seed) for seed in (0, 1)}  # read once; each tag and weight reuses them
    score = with_term(cosine[0])
    alone = cosine_at(1e-3)  # session 7's default: lr 1e-3, the cosine alone
    # D: the same 240-step run read by the lp probe (budgets --score lp), per seed; the table shows seed 0
    lp_seeded = {seed: _lp_rows(LP_BUDGET_CSV, 240, seed, genomes) for seed in (0, 1)}
    lp = lp_seeded[0]
    # session 12's candidates (CANDIDATES), where their rows exist
    candidates = {label: values for label, (steps, stop, examples, seed) in CANDIDATES.items()
                  if (values := _lp_rows(budget_csv("lp", stop, examples), steps, seed, genomes, "+retry" in label,
                                         CANDIDATE_LR.get(label, MEASURED_LR)))}
    for label in [k for k in candidates if "+retry" in k]:  # only where a retry changed something
        if candidates[label] == candidates.get(label.removesuffix("+retry")):
            del candidates[label]
    scorer = CheapScorer(["latency_ms@pixel4"])
    latency = {n: scorer.scores(a)["latency_ms@pixel4"] for n, a in genomes.items()}
    by_gt = sorted(gt, key=lambda n: -gt[n])
    print(f"ground truth = mean dev accuracy of {', '.join(tasks)}: the set over the runs "
          f"{', '.join(f'{r.steps}:{r.seed}' for r in [ground_files(args.distill_steps, args.ground_seed), *args.also_runs])}; "
          f"the {', '.join(tags)} genomes over seeds {', '.join(map(str, args.seeds))} at {args.distill_steps} steps")
    print(f"score = the 240-step cosine at lr {MEASURED_LR:g} (seed 0) + {PARAMS_WEIGHT:g} ln(params / 1M), the default run")
    if lp:
        print(f"lp = the same run (seed 0) read by the lp probe instead (DistillConfig(score='lp')), for {len(lp)} genomes")
    for label, values in candidates.items():
        steps, stop, examples, seed = CANDIDATES[label]
        print(f"{label} = {steps} steps of a {round(steps / stop)}-step schedule read by the lp probe on {examples} + {examples} glosses "
              f"(seed {seed}, peak lr {CANDIDATE_LR.get(label, MEASURED_LR):g}), for {len(values)} genomes" + (", a diverged run read at its retry at half the rate" if "+retry" in label else ""))
    _seeds_of_f(candidates, gt, params)
    _half_rate(candidates, gt, params)
    _crossfit(gt, params, {CANDIDATES[k][3]: candidates.get(f"{k}+retry", candidates[k]) for k in F_SEEDS if k in candidates})
    for label, values in [(f"D, seed {seed}", v) for seed, v in lp_seeded.items()] + [(f"{k}, seed {CANDIDATES[k][3]}", v) for k, v in candidates.items()]:
        failed = sorted(n for n, v in values.items() if v == DIVERGED)
        if failed:
            print(f"{label} diverged on {len(failed)} of {len(values)}: {', '.join(failed)} (ranked below every scored genome)")
    by_candidate = {label: _places(values) for label, values in candidates.items()}
    place_gt, place_score, place_lp = _places(gt), _places(score), _places(lp)
    print(f"{'genome':<24} {'params':>7} {'layers':>6} {'pixel4':>8} {'gt':>7} {'gt rank':>7} {'score':>7} {'rank':>5}"
          + (f" {'lp':>7} {'rank':>5}" if lp else "") + "".join(f" {label:>7} {'rank':>5}" for label in candidates) + "  per seed")
    for n in by_gt:
        seeds = " ".join(f"{v:.4f}" for v in per_seed.get(n, []))
        line = (f"{n:<24} {params[n] / 1e6:6.1f}M {genomes[n].num_layers:>6} {latency[n]:6.1f}ms {gt[n]:7.4f} "
                f"{place_gt[n]:>7} ")
        line += f"{score[n]:7.4f} {place_score[n]:>5}" if n in score else f"{'-':>7} {'-':>5}"
        if lp:
            line += f" {lp[n]:7.4f} {place_lp[n]:>5}" if n in lp else f" {'-':>7} {'-':>5}"
        for label, values in candidates.items():
            line += f" {values[n]:7.4f} {by_candidate[label][n]:>5}" if n in values else f" {'-':>7} {'-':>5}"
        print(line + ("  " + seeds if seeds else ""))
    pairs = _reference_pair_list(gt, genomes, list(gt))
    read_outs = [("the default score", score), ("session 7's (240-step cosine at lr 1e-3)", alone)]
    for label, values in read_outs + ([("the lp read-out (D)", lp)] if lp else []) + [(f"candidate {k}", v) for k, v in candidates.items()]:
        both = [n for n in gt if n in values]
        missed = _misses(pairs, values)
        big = [n for n in both if params[n] > 10e6]
        print(f"{label}: Kendall tau {_tau(values, gt, both):.3f} over these {len(both)} genomes, {_tau(values, gt, big):.3f} "
              f"over the {len(big)} above 10M; reference pairs "
              f"{len(pairs) - len(missed)}/{len(pairs)}" + (f", misses {', '.join(missed)}" if missed else ""))
    groups = {tag: [n for n in gt if n.startswith(f"{tag}-")] for tag in tags}
    if len(tags) > 1:  # all of them together, and (the goal's second half) those above 10M
        together = [n for own in groups.values() for n in own]
        groups[" + ".join(tags)] = together
        big = [n for n in together if params[n] > 10e6]
        if len(big) >= 3:
            groups[f"{' + '.join(tags)}, above 10M"] = big
    for tag, own in groups.items():  # each run of outside genomes, and all of them: how the score carries to genomes it was not chosen on
        print(f"\n{tag}: {len(own)} genomes; Kendall tau against their ground truth")
        seeded = {seed: with_term(values) for seed, values in cosine.items()}
        taus = [_tau(values, gt, own) for values in seeded.values() if all(n in values for n in own)]
        for seed, values in seeded.items():
            if all(n in values for n in own):
                print(f"  the default score, seed {seed}: {_tau(values, gt, own):.3f}")
        if taus:
            print(f"  the default score, mean of {len(taus)} seed(s)' taus: {sum(taus) / len(taus):.3f}")
        print(f"  parameter count: {_tau(params, gt, own):.3f}")
        if all(n in alone for n in own):
            print(f"  session 7's score (seed 0): {_tau(alone, gt, own):.3f}")
        taus = {seed: _tau(values, gt, own) for seed, values in lp_seeded.items() if own and all(n in values for n in own)}
        for seed, value in taus.items():
            print(f"  the lp read-out (D), seed {seed}: {value:.3f}")
        if len(taus) > 1:
            print(f"  the lp read-out (D), mean of {len(taus)} seeds' taus: {sum(taus.values()) / len(taus):.3f}; "
                  f"seed 0 against seed 1: {_tau(lp_seeded[0], lp_seeded[1], own):.3f}")
        for label, values in candidates.items():
            if not own or not all(n in values for n in own):
                continue
            scored = [n for n in own if values[n] != DIVERGED and all(v.get(n) != DIVERGED for v in lp_seeded.values())]
            print(f"  candidate {label} (seed {CANDIDATES[label][3]}): {_tau(values, gt, own):.3f}"
                  + (f"; without the {len(own) - len(scored)} genome(s) a run of D or {label} diverged on: {label} "
                     f"{_tau(values, gt, scored):.3f}, D " + " / ".join(f"{_tau(v, gt, scored):.3f}" for v in lp_seeded.values()
                                                             if all(n in v for n in scored))
                     if len(scored) < len(own) else ""))
        for weight in args.weights:  # the same score with another weight on the term
            taus = [_tau(with_term(values, weight), gt, own) for values in cosine.values() if all(n in values for n in own)]
            if taus:
                print(f"  the 240-step cosine + {weight:g} ln(params / 1M), mean of {len(taus)} seed(s)' taus: {sum(taus) / len(taus):.3f}")
    if args.band:
        low, high = args.band
        band = sorted((n for n in gt if low <= latency[n] <= high), key=lambda n: -gt[n])
        if band:
            print(f"\nthe band {low:g}-{high:g} ms on pixel4: {len(band)} genomes; the ground truth's first is {band[0]} ({gt[band[0]]:.4f})")
            for label, values in (("the default score", score), ("the lp read-out", lp), *((f"candidate {k}", v) for k, v in candidates.items())):
                scored = [n for n in band if n in values]
                if scored:
                    pick = max(scored, key=lambda n: values[n])
                    print(f"{label}'s first in the band is {pick} (ground truth {gt[pick]:.4f}, {band.index(pick) + 1} of {len(band)} "
                          f"in the band, {place_gt[pick]} of {len(gt)})" + (f"; it scored {len(scored)} of them" if len(scored) < len(band) else ""))
    _like_for_like({n: v for n, v in gt_runs.items() if n in gt}, lp_seeded, candidates, params, genomes)
    _noise({n: v for n, v in gt_runs.items() if n in gt}, candidates, params)
    _spikes(spikes, args.skip_spiked)
