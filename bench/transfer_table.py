"""How many measurements does a new device need? (issue 13) The transfer table, from the CSV.

    .venv/bin/python bench/latency.py transfer [--draws 10] [--strength 0.1] [--sensitivity]
    .venv/bin/python bench/latency.py transfer --write   # also predictors/transfer_errors.json and the
                                                         # expected error in predictors/profiles/*.json

Reads ``bench/results/transfer_measurements.csv`` and ``transfer_design.json`` (written by
``bench/transfer_measure.py``) and re-runs in seconds. The base predictor is fitted on the base
setting (ONNX Runtime fp32, 1 thread) from the 40 pool genomes and the kernels. For every other
setting (a "new device"), N calibration genomes are drawn from the pool (seeded draws, disjoint from
the 40 held-out genomes), each method fits prices from them, and the held-out genomes of that
setting score it; the table gives the median over draws.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from predictors.data import _genome, now_iso, write_json_atomic  # noqa: E402
from predictors.evaluate import drift_factor  # noqa: E402
from predictors.fit import Rows, fit_structural, genome_rows, kernel_rows, predict_rows, scores, stack  # noqa: E402
from predictors.transfer import DEFAULT_GROUPS, DEFAULT_STRENGTH, draw_subsets, transfer_fit  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BASE = "ort-fp32-1t"
NS = (2, 4, 10, 20)
# (label, method, with kernels)
VARIANTS = (("global scale (1)", "global", False), ("group scales (3)", "groups", False),
            ("prior refit", "prior", False), ("prior refit + kernels", "prior", True),
            ("from scratch", "scratch", False), ("from scratch + kernels", "scratch", True))
TRUST_WITHIN_10 = 0.95
# A pass is quiet when the load average it was measured at is at most this: no more runnable
# processes than the 2 cores of the VM the study ran on (its own timing process included).
QUIET_LOAD = 2.0


class Study:
    """The measured latencies, by target and id, with the genomes, roles and kernel features."""

    def __init__(self, csv_path: Path = RESULTS / "transfer_measurements.csv", design_path: Path = RESULTS / "transfer_design.json"):
        design = json.loads(design_path.read_text())
        self.genomes = {gid: _genome(g, f"{design_path}: genomes.{gid}", expected_id=gid) for gid, g in design["genomes"].items()}
        self.roles = design["roles"]
        self.kernels = {k["name"]: k for k in design["kernels"]}
        self.targets = [t["name"] for t in design["targets"]]
        # every pass's latency; a genome's latency is the lowest pass (noise only ever slows a run down,
        # as in predictors.harness.Measurement)
        self.passes: dict[str, dict[str, list[float]]] = {t: {} for t in self.targets}
        self.quiet: dict[str, dict[str, list[float]]] = {t: {} for t in self.targets}  # the passes at QUIET_LOAD or less
        with csv_path.open() as handle:
            for row in csv.DictReader(handle):
                self.passes[row["target"]].setdefault(row["id"], []).append(float(row["latency_ms"]))
                if float(row["load_average"]) <= QUIET_LOAD:
                    self.quiet[row["target"]].setdefault(row["id"], []).append(float(row["latency_ms"]))
        self.latency = {t: {i: min(v) for i, v in by_id.items()} for t, by_id in self.passes.items()}

    def retest(self, target: str) -> str | None:
        """How two quiet passes over the same genomes agree, as one line: the uniform drift between
        them (a median ratio; the VM's speed moved between passes), then each genome's disagreement
        once that drift is divided out (the noise floor no predictor can be checked below). None
        without two quiet passes."""
        pairs = [v[:2] for i, v in self.quiet[target].items() if len(v) > 1 and i in self.genomes]
        if not pairs:
            return None
        ratios = np.array([b / a for a, b in pairs])
        drift = float(np.median(ratios))
        residual = np.abs(ratios / drift - 1)
        return (f"two quiet passes over {len(pairs)} genomes: the second {drift:.2f}x the first (uniform drift); "
                f"with that divided out, a genome's two readings differ by a median {np.median(residual):.1%} and agree "
                f"within +-10 % for {np.mean(residual <= 0.10):.0%} of genomes (the noise floor)")

    def ids(self, target: str, role: str) -> list[str]:
        """Ids of `role` measured on `target` on every target (so all targets score the same genomes)."""
        return sorted(i for i, r in self.roles.items() if r == role and all(i in self.latency[t] for t in self.targets))

    def rows(self, target: str, ids: list[str]) -> Rows:
        return genome_rows([self.genomes[i] for i in ids], [self.latency[target][i] for i in ids], 128)

    def kernel_rows(self, target: str) -> Rows:
        return kernel_rows([dict(self.kernels[k], latency_ms=v) for k, v in sorted(self.latency[target].items()) if k in self.kernels])


def base_predictor(study: Study) -> dict[str, float]:
    pool = study.ids(BASE, "pool")
    return fit_structural(stack(study.rows(BASE, pool), study.kernel_rows(BASE)))


def transfer_scores(study: Study, base: dict[str, float], target: str, draws: int, strength: float,
                    variants=VARIANTS, ns=NS) -> dict[tuple[str, int], dict[str, float]]:
    """Median held-out scores over `draws` calibration draws, per (variant label, N)."""
    pool, held = study.ids(target, "pool"), study.ids(target, "heldout")
    test = study.rows(target, held)
    kernels = study.kernel_rows(target)
    out = {}
    for n in ns:
        subsets = draw_subsets(pool, n, draws, seed=1000 + n)
        for label, method, with_kernels in variants:
            runs = []
            for ids in subsets:
                rows = study.rows(target, ids)
                if with_kernels and len(kernels.y):
                    rows = stack(rows, kernels)
                groups = tuple(method.split(":", 1)[1].split(",")) if method.startswith("groups:") else DEFAULT_GROUPS
                coefficients = transfer_fit(base, rows, method.split(":", 1)[0], strength=strength, groups=groups)
                runs.append(scores(test.y, predict_rows(coefficients, test.x)))
            out[(label, n)] = {k: float(np.median([r[k] for r in runs])) for k in ("mape", "within_5", "within_10", "kendall_tau")}
    return out


def across_settings(tables: dict[str, dict], label: str, n: int) -> dict[str, float | list[float]]:
    """One (method, N) cell summarised over the settings: medians and the range of MAPE."""
    cells = [t[(label, n)] for t in tables.values()]
    mape = [c["mape"] for c in cells]
    return {"mape_median": float(np.median(mape)), "mape_range": [float(min(mape)), float(max(mape))],
            "within_10_median": float(np.median([c["within_10"] for c in cells])),
            "kendall_tau_median": float(np.median([c["kendall_tau"] for c in cells]))}


def write_errors(study: Study, base: dict[str, float], tables: dict[str, dict], summary: dict, draws: int, strength: float) -> None:
    """predictors/transfer_errors.json (what ingest quotes and picks its method by) and, in each
    shipped phone profile, the error its own method and N give on the measured settings."""
    targets = list(tables)
    source = (f"bench/latency.py transfer --write: {len(study.ids(BASE, 'heldout'))} held-out genomes on each of {', '.join(targets)}; "
              f"N calibration genomes drawn {draws} times from a disjoint pool; base {BASE} fitted on the pool + kernels")
    errors = {"format": "nas-transfer-errors", "written": now_iso(), "source": source, "settings": targets, "ns": list(NS),
              "prior_strength": strength, "trusted_within_10": TRUST_WITHIN_10,
              "methods": {label: {"method": method, "kernels": kernels,
                                  "by_n": {str(n): across_settings(tables, label, n) for n in NS},
                                  "n_for_trusted": {t: summary[t][label] for t in targets}}
                          for label, method, kernels in VARIANTS}}
    write_json_atomic(ROOT / "predictors" / "transfer_errors.json", errors)
    print("\nwrote predictors/transfer_errors.json")
    for path in sorted((ROOT / "predictors" / "profiles").glob("*.json")):
        profile = json.loads(path.read_text())
        prov = profile["provenance"]
        n, groups = len(prov["fitted_on"]), list(prov["groups"])
        label = f"group scales ({'+'.join(groups)})"
        variant = ((label, "groups:" + ",".join(groups), False),)
        per = {t: transfer_scores(study, base, t, draws, strength, variant, (n,)) for t in targets}
        cell = across_settings(per, label, n)
        prov["expected_error"] = {
            "method": f"one scale per group ({', '.join(groups)}) on {n} measured genomes, as this profile was fitted",
            "mape_median": cell["mape_median"], "mape_range": cell["mape_range"],
            "within_10_median": cell["within_10_median"], "kendall_tau_median": cell["kendall_tau_median"],
            "measured_on": f"{len(targets)} host settings treated as new devices ({', '.join(targets)})",
            "source": source,
        }
        write_json_atomic(path, profile)
        print(f"{path.name}: {label}, N={n}: MAPE {cell['mape_median']:.1%} (range {cell['mape_range'][0]:.1%}-{cell['mape_range'][1]:.1%}), "
              f"within +-10 % {cell['within_10_median']:.0%}")


def n_needed(table: dict, label: str, ns=NS) -> int | None:
    return next((n for n in ns if table[(label, n)]["within_10"] >= TRUST_WITHIN_10), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=10, help="calibration draws per N (default 10; the table gives medians)")
    parser.add_argument("--strength", type=float, default=DEFAULT_STRENGTH, help=f"prior strength (default {DEFAULT_STRENGTH})")
    parser.add_argument("--sensitivity", action="store_true", help="also print the prior-strength sensitivity")
    parser.add_argument("--write", action="store_true", help="write predictors/transfer_errors.json and the profiles' expected error")
    args = parser.parse_args(argv)
    study = Study()
    base = base_predictor(study)
    pool, held = study.ids(BASE, "pool"), study.ids(BASE, "heldout")
    print(f"# Transfer to new settings from N measured genomes ({len(pool)} pool, {len(held)} held-out genomes measured "
          f"on all {len(study.targets)} settings; {len(study.kernels)} kernels)\n")
    base_test = study.rows(BASE, held)
    noise = study.retest(BASE)
    if noise is not None:
        print(f"Repeatability on {BASE}: {noise}.")
    s = scores(base_test.y, predict_rows(base, base_test.x))
    print(f"Base predictor ({BASE}, fitted on the {len(pool)} pool genomes + kernels), on its own held-out genomes: "
          f"MAPE {s['mape']:.1%}, within +-10 % {s['within_10']:.0%}, Kendall tau {s['kendall_tau']:.3f}; "
          f"held-out latencies {base_test.y.min():.1f}-{base_test.y.max():.1f} ms (median {np.median(base_test.y):.1f}).\n")
    summary: dict[str, dict[str, int | None]] = {}
    tables: dict[str, dict] = {}
    for target in study.targets:
        if target == BASE:
            continue
        test = study.rows(target, held)
        raw = scores(test.y, predict_rows(base, test.x))
        full = fit_structural(stack(study.rows(target, pool), study.kernel_rows(target)))
        ceiling = scores(test.y, predict_rows(full, test.x))
        table = tables[target] = transfer_scores(study, base, target, args.draws, args.strength)
        print(f"## {target}\n")
        noise = study.retest(target)
        if noise is not None:
            print(f"Repeatability: {noise}.\n")
        print(f"held-out latencies {test.y.min():.1f}-{test.y.max():.1f} ms (median {np.median(test.y):.1f}, "
              f"{np.median(test.y / base_test.y):.2f}x the base setting's); base predictor untouched: MAPE {raw['mape']:.1%}, "
              f"within +-10 % {raw['within_10']:.0%}, Kendall tau {raw['kendall_tau']:.3f}; ceiling (from scratch on all "
              f"{len(pool)} pool genomes + kernels of this setting): MAPE {ceiling['mape']:.1%}, within +-10 % "
              f"{ceiling['within_10']:.0%}, tau {ceiling['kendall_tau']:.3f}\n")
        print("| method | " + " | ".join(f"N={n}: MAPE / +-10 % / tau" for n in NS) + " | N for 95 % within +-10 % |")
        print("|---|" + "---:|" * (len(NS) + 1))
        summary[target] = {}
        for label, _, _ in VARIANTS:
            cells = [f"{table[(label, n)]['mape']:.1%} / {table[(label, n)]['within_10']:.0%} / {table[(label, n)]['kendall_tau']:.3f}" for n in NS]
            needed = n_needed(table, label)
            summary[target][label] = needed
            print(f"| {label} | " + " | ".join(cells) + f" | {needed if needed else '> ' + str(NS[-1])} |")
        print()
    print("## N at which each method reaches 95 % of held-out genomes within +-10 % (median of draws)\n")
    print("| method | " + " | ".join(summary) + " |")
    print("|---|" + "---:|" * len(summary))
    for label, _, _ in VARIANTS:
        print(f"| {label} | " + " | ".join(str(summary[t][label] or f"> {NS[-1]}") for t in summary) + " |")
    print("\n## Across settings: median MAPE (range) / median within +-10 % / median tau\n")
    print("| method | " + " | ".join(f"N={n}" for n in NS) + " |")
    print("|---|" + "---:|" * len(NS))
    for label, _, _ in VARIANTS:
        cells = [across_settings(tables, label, n) for n in NS]
        print(f"| {label} | " + " | ".join(f"{c['mape_median']:.1%} ({c['mape_range'][0]:.0%}-{c['mape_range'][1]:.0%}) / "
                                           f"{c['within_10_median']:.0%} / {c['kendall_tau_median']:.2f}" for c in cells) + " |")
    busy = "ort-fp32-1t-busy"
    if busy in study.latency:
        anchors = pool[:: max(1, len(pool) // 10)][:10]
        factor = drift_factor([study.latency[busy][i] for i in anchors], [study.latency[BASE][i] for i in anchors])
        test = study.rows(busy, held)
        raw, corrected = scores(test.y, predict_rows(base, test.x)), scores(test.y, predict_rows(base, test.x) * factor["factor"])
        print(f"\n## Load drift: the base predictor on the busy setting\n\n10 pool genomes re-measured busy ran x{factor['factor']:.3f} "
              f"(quartiles {factor['q1']:.3f}-{factor['q3']:.3f}) as long as quiet. Held-out, raw: MAPE {raw['mape']:.1%}, "
              f"within +-10 % {raw['within_10']:.0%}, tau {raw['kendall_tau']:.3f}; corrected by that factor: MAPE {corrected['mape']:.1%}, "
              f"within +-10 % {corrected['within_10']:.0%}, tau {corrected['kendall_tau']:.3f}.")
    if args.sensitivity:
        print("\n## Prior strength (median over settings of the median over draws, within +-10 % / MAPE)\n")
        print("| strength | " + " | ".join(f"N={n}" for n in NS) + " |")
        print("|---|" + "---:|" * len(NS))
        variant = (("prior refit", "prior", False),)
        for strength in (0.01, 0.03, 0.1, 0.3, 1.0):
            per = [transfer_scores(study, base, t, args.draws, strength, variant) for t in study.targets if t != BASE]
            cells = [f"{np.median([p[('prior refit', n)]['within_10'] for p in per]):.0%} / "
                     f"{np.median([p[('prior refit', n)]['mape'] for p in per]):.1%}" for n in NS]
            print(f"| {strength} | " + " | ".join(cells) + " |")
    if args.write:
        write_errors(study, base, tables, summary, args.draws, args.strength)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
