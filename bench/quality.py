"""Ground truth for the quality axis, and how well cheap proxies rank architectures against it.

    python bench/quality.py genomes                       # the genome set: names, params, FLOPs
    python bench/quality.py ground  [--threads 1] [--distill-steps 960] [--only NAME,...]
    python bench/quality.py proxies [--threads 1] [--only NAME,...]
    python bench/quality.py regrade                       # the ground truth: a linear head on the kept students
    python bench/quality.py readout-noise --tag draw8f --lp-dev 12000   # how much of a run's noise is the read-out's
    python bench/quality.py readout-compare --tag draw8f --seeds 0 1    # the score's read-out of kept students beside their grade
    python bench/quality.py ground --distill-steps 1280 --grade lp --lp-dev 12000 [--ground-seed 1]   # a longer run, graded as it goes
    python bench/quality.py report --gt-tasks lp-supersense,lp-pos --also-runs 1280 [1280:1]   # the mean of several runs
    python bench/quality.py readouts | budgets [--budgets 240 480] [--seeds 0 1] [--lr 1e-3]   # more proxies: readouts, run lengths
    python bench/quality.py report --gt-tasks lp-supersense,lp-pos   # Kendall tau of every proxy vs the ground truth
    python bench/quality.py ground --genome-files G.json ... --tag front8 --grade lp --lp-dev 12000 [--ground-seed 1]   # a search's front
    python bench/quality.py front-report --genome-files G.json ... --tag front8 --seeds 0 1 --gt-tasks lp-supersense,lp-pos --also-runs ...
    python bench/quality.py draw --tag band8 --draw-seed 11 --count 8 --params 10 30 --latency 20 80   # held-out genomes from the space

ground: each genome gets the long recipe: distillation from the teacher for ``--distill-steps``
(640 on CPU: 16x the search's quick preset, 1.8x the default run; ask for more on a GPU), held-out checkpoints every 80 steps, a
copy of the weights at half and at the full budget, and each copy fine-tuned on two downstream
tasks built from real data (WordNet supersense of a gloss, 45 classes; and a sentence-pair view:
do two glosses share a supersense), at the learning rates of ``--lrs`` (best dev accuracy kept). Ground truth = mean dev accuracy
of the two tasks at the full budget; the same at half the budget shows whether the ranking has
converged. One CSV row per genome is appended as soon as it is done, so a stopped run resumes
where it was (``bench/results/quality_ground_truth.csv``).

proxies: the cheap scores a search could afford per candidate, on the same genomes, appended to
``bench/results/quality_proxies.csv``; ``report`` joins both files and prints the taus, over all
genomes and over those above 10M parameters.

Deterministic: same settings, hardware and thread count give the same rows. The commands live in
quality_ground.py (ground, extra-task, regrade), quality_proxies.py (proxies, readouts, budgets) and
quality_report.py (report); quality_common.py holds the genome set and the result files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nas
from nas.distill.cli import _positive_float  # nas distill --lr's check: one line, exit 2
from quality_common import draw_band, genome_set, parse_run, usage_error
from quality_ground import run_extra_task, run_ground, run_readout_compare, run_readout_noise, run_regrade
from quality_proxies import run_budgets, run_proxies, run_readouts
from quality_report import run_front_report, run_report

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def flags(*groups: str) -> argparse.ArgumentParser:
        """A parent parser holding the flags several commands share."""
        shared = argparse.ArgumentParser(add_help=False)
        for group in groups:
            if group == "threads":
                shared.add_argument("--threads", type=int, default=1, help="torch threads of this process")
            elif group == "genomes":
                shared.add_argument("--only", help="comma-separated genome names of the set")
                shared.add_argument("--genome-files", nargs="+", metavar="GENOME.json",
                                    help="these genomes (named by file stem) instead of the set")
            elif group == "run":
                shared.add_argument("--distill-steps", type=int, default=640,
                                    help="the ground-truth run's budget (640 = the first; another budget keeps its own files)")
                shared.add_argument("--ground-seed", type=int, default=0,
                                    help="the ground-truth run's distillation seed (each seed keeps its own files)")
            elif group == "reverse":
                shared.add_argument("--reverse", action="store_true", help="work through the genomes from the end (a second process)")
            elif group == "finetune":
                shared.add_argument("--train-examples", type=int, default=1000)
                shared.add_argument("--dev-examples", type=int, default=400)
                shared.add_argument("--epochs", type=int, default=2)
                shared.add_argument("--lrs", type=float, nargs="+", default=[1e-3])
            elif group == "lp":
                shared.add_argument("--lp-train", type=int, default=8000, help="glosses the linear head is fit on")
                shared.add_argument("--lp-dev", type=int, default=6000, help="dev glosses it is read on")
                shared.add_argument("--teacher", help="the teacher (a transformers folder or hub id, or a genome with weights; "
                                                      "default the embedded all-MiniLM-L6-v2)")
            elif group == "report":
                shared.add_argument("--gt-tasks", default="supersense,pair", help="the tasks whose mean accuracy is the ground truth")
                shared.add_argument("--also-runs", nargs="+", type=parse_run, default=[], metavar="STEPS[:SEED]",
                                    help="average the linear-probe ground truth of these runs with --distill-steps' run, e.g. 1280 1280:1")
        return shared

    def command(name: str, help: str, *groups: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, parents=[flags(*groups)])

    sub = command("genomes", "the genome set: names, params, FLOPs")
    sub.add_argument("--out", help="also write each genome of the set to OUT/NAME.json (for ground --genome-files)")
    sub = command("draw", "held-out genomes: seeded space draws in a params/latency band, as genome files")
    sub.add_argument("--tag", default="", help="the folder and name prefix of the genome files")
    sub.add_argument("--draw-seed", type=int, default=11, help="the space sampler's seed")
    sub.add_argument("--count", type=int, default=8, help="how many genomes")
    sub.add_argument("--params", type=float, nargs=2, default=[10, 30], metavar=("MIN", "MAX"), help="millions of parameters")
    sub.add_argument("--latency", type=float, nargs=2, default=[20, 80], metavar=("MIN", "MAX"), help="pixel4 ms")
    sub = command("ground", "the ground truth: long distillation, then a downstream grade", "threads", "genomes", "run", "reverse", "finetune", "lp")
    sub.add_argument("--tag", default="", help="the name of a run of --genome-files (its own result files)")
    sub.add_argument("--grade", choices=["finetune", "lp"], default="finetune",
                     help="fine-tune each snapshot on two tasks (the first reading), or grade it with regrade's linear probe")
    sub.add_argument("--batch-size", type=int, default=8,
                     help="sequences per distillation step (8, DistillConfig's, on the CPU; more where a GPU makes a step cost the same)")
    sub = command("extra-task", "fine-tune the kept students on one more task", "threads", "run", "finetune")
    sub.add_argument("--task", default="wordnet-pos", help="the embedded task to fine-tune the kept students on")
    command("regrade", "the linear-probe grade of the kept students", "threads", "run", "reverse", "lp")
    sub = command("readout-noise", "how much the lp read-out alone moves, on a tagged run's kept features", "threads", "run", "lp")
    sub.add_argument("--tag", default="", help="the tagged ground-truth run whose kept features to read")
    sub.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="its seeds (two or more)")
    sub = command("readout-compare", "the shipped score's read-out of kept ground-truth students, beside their grade", "threads", "run", "lp")
    sub.add_argument("--tag", default="", help="the tagged ground-truth runs whose kept students to read (comma-separated)")
    sub.add_argument("--seeds", type=int, nargs="+", default=[0], help="their seeds")
    sub.add_argument("--lp-examples", type=int, default=8000, help="the read-out's glosses to fit on, and as many to read on (the default run's)")
    command("proxies", "the cheap scores a search could afford, on the same genomes", "threads", "genomes")
    command("readouts", "other read-outs of a short run's features", "threads", "genomes", "reverse")
    sub = command("budgets", "the default run's cosine at other budgets, seeds and learning rates", "threads", "genomes", "reverse")
    sub.add_argument("--budgets", type=int, nargs="+", default=[240, 480], help="distillation steps")
    sub.add_argument("--seeds", type=int, nargs="+", default=[0], help="the runs' seeds (student init and data order)")
    sub.add_argument("--lr", type=_positive_float, help="the runs' peak learning rate (default: DistillConfig's)")
    sub.add_argument("--score", choices=["cosine", "lp"], default="cosine",
                     help="read each run by its cosine to the teacher, or by the lp probe (its own CSV, the cosine beside it)")
    sub.add_argument("--stop-fraction", type=_positive_float, default=1.0, help="train this fraction of the learning-rate schedule: "
                     "0.5 lays it out over twice the budget and stops halfway (DistillConfig.stop_fraction; default 1)")
    sub.add_argument("--lp-examples", type=int, default=4000, help="--score lp: glosses the heads are fit on, and read on as many more")
    sub.add_argument("--crossfit", action="store_true", help="--score lp: read each run's student again, one way and cross-fitted "
                     "(each half of the glosses fits the heads that read the other), into a CSV of its own")
    command("report", "the Kendall tau of every proxy against the ground truth", "run", "report")
    sub = command("front-report", "genomes from outside the set beside it: their ground truth and the score's ranking", "genomes", "run", "report")
    sub.add_argument("--tag", default="", help="the runs of --genome-files to read, comma-separated")
    sub.add_argument("--seeds", type=int, nargs="+", default=[0], help="the ground-truth seeds of those runs")
    sub.add_argument("--band", type=float, nargs=2, metavar=("MIN", "MAX"),
                     help="which genome of this pixel4 latency band (ms) the score ranks first, and its true place")
    sub.add_argument("--skip-spiked", action="store_true", help="leave out of each genome's ground truth its runs whose held-out "
                     "loss spiked (over 1.2x its lowest so far; a sensitivity check, not the ground truth)")
    sub.add_argument("--weights", type=float, nargs="+", default=[], metavar="W",
                     help="also each tag's tau with the parameter term at these weights")
    args = parser.parse_args()
    if args.command == "genomes":
        if args.out and Path(args.out).exists():
            usage_error(f"--out {args.out} exists: the set is written into a new folder (remove it, or choose another)")
        for name, arch in genome_set().items():
            cost = nas.count(arch, 128)
            if args.out:
                arch.save(Path(args.out) / f"{name}.json")
            print(f"{name:<20} {cost.params / 1e6:6.2f}M {2 * cost.macs / 1e9:7.2f} GFLOPs  {arch.id}")
        return
    if args.command == "draw":
        run_draw(args)
        return
    {"ground": run_ground, "extra-task": run_extra_task, "regrade": run_regrade, "readout-noise": run_readout_noise, "readout-compare": run_readout_compare, "readouts": run_readouts, "budgets": run_budgets, "proxies": run_proxies, "report": run_report,
     "front-report": run_front_report}[args.command](args)


def run_draw(args) -> None:
    """Write ``--count`` held-out genomes (seeded space draws in the given ranges) to
    bench/results/TAG/TAG-ID.json, for ``ground``/``budgets``/``front-report --genome-files``."""
    from quality_common import RESULTS

    if not args.tag or "," in args.tag:
        usage_error("draw needs --tag NAME: the folder and the name prefix of the genome files")
    folder = RESULTS / args.tag
    if folder.exists():
        usage_error(f"{folder} exists: a draw is written once (remove it, or choose another --tag)")
    found = draw_band(args.draw_seed, args.count, (args.params[0] * 1e6, args.params[1] * 1e6), tuple(args.latency))
    if len(found) < args.count:
        usage_error(f"only {len(found)} of 20000 draws fall in --params {args.params} and --latency {args.latency}: widen them")
    from nas.search.objectives import CheapScorer

    scorer = CheapScorer(["latency_ms@pixel4"])
    for arch_id, arch in found.items():
        path = arch.save(folder / f"{args.tag}-{arch_id}.json")
        print(f"{path.name:<28} {nas.count(arch).params / 1e6:6.2f}M {arch.num_layers:>2} layers  hidden {arch.hidden_size:>3}  "
              f"embedding {arch.embedding_size:>3}  pixel4 {scorer.scores(arch)['latency_ms@pixel4']:5.1f} ms")


if __name__ == "__main__":
    main()
