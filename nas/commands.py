"""Design-space subcommands: ``nas space``, ``nas count``, ``nas reproduce``."""

from __future__ import annotations

import sys
from pathlib import Path

from nas.graph import count
from nas.references import load_genome, reference, reference_names
from nas.space import load_space
from nas.cli import positive_int as _positive_int


def register(subparsers) -> None:
    space = subparsers.add_parser("space", help="show or sample a search space")
    space_sub = space.add_subparsers(dest="space_command", required=True, parser_class=type(space))
    show = space_sub.add_parser("show", help="size, dimensions and the reference designs a space holds")
    show.add_argument("space", help="a shipped space name (mobile, tiny, ...) or a path to a .yaml file")
    show.set_defaults(func=_space_show)
    sample = space_sub.add_parser("sample", help="print K valid genomes as JSON lines")
    sample.add_argument("space", help="a shipped space name or a path to a .yaml file")
    sample.add_argument("-n", type=_positive_int, default=5, help="how many genomes (default 5)")
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(func=_space_sample)

    cost = subparsers.add_parser(
        "count", help="exact params, MACs and FLOPs (= 2 x MACs) of genomes or reference designs"
    )
    cost.add_argument("genomes", nargs="+", help="GENOME.json files or reference names")
    cost.add_argument("--seq-len", type=_positive_int, default=128)
    cost.set_defaults(func=_count)

    reproduce = subparsers.add_parser(
        "reproduce", help="our counts of the reference designs beside their published figures"
    )
    reproduce.add_argument("name", nargs="?", default="all", help=f"one of {', '.join(reference_names())}, or all")
    reproduce.add_argument("--seq-len", type=_positive_int, default=128)
    reproduce.add_argument(
        "--distill-steps", type=_positive_int, default=None, metavar="N",
        help="also score each design by an N-step distillation from the default teacher (slow for large designs)",
    )
    reproduce.add_argument(
        "--quality", action="store_true",
        help="also score each design the way the default search scores candidates (its distillation settings; cached)",
    )
    reproduce.add_argument("--seed", type=int, default=0, help="seed of the distillation runs")
    reproduce.set_defaults(func=_reproduce)


def _space_show(args) -> int:
    space = load_space(args.space)
    fraction = space.valid_fraction()
    out = sys.stdout
    out.write(f"space {space.name} ({space.path})\n")
    if space.description:
        out.write(f"  {space.description}\n")
    out.write(f"  combinations: {space.grid_size:,} (about {fraction:.0%} valid genomes, ~{space.grid_size * fraction:,.0f})\n")
    out.write("  dimensions:\n")
    for name, dim in space.dimensions.items():
        if dim.choices is not None:
            values = ", ".join("none" if v is None else str(v) for v in dim.choices)
            out.write(f"    {name:<24} {values}\n")
        else:
            out.write(f"    {name:<24} {dim.low} .. {dim.high} step {dim.step} ({len(dim.values)} values)\n")
    if space.fixed:
        out.write("  fixed: " + ", ".join(f"{k}={v}" for k, v in space.fixed.items()) + "\n")
    for condition in space.conditions:
        out.write(f"  condition: {condition.source}\n")
    out.write("  reference designs:\n")
    for name in reference_names():
        reason = space.why_not(reference(name).arch)
        out.write(f"    {name:<20} {'member' if reason is None else 'not a member: ' + reason}\n")
    return 0


def _space_sample(args) -> int:
    from nas.cli import print_json_lines

    space = load_space(args.space)
    print_json_lines(arch.to_dict() | {"id": arch.id} for arch in space.iter_samples(args.n, args.seed))
    return 0


def _count(args) -> int:
    genomes = [(spec, load_genome(spec)) for spec in args.genomes]  # all errors before any output
    print(f"{'genome':<28} {'params':>14} {'MACs':>16} {'FLOPs (2 x MACs)':>18}   seq_len={args.seq_len}, batch 1")
    for spec, arch in genomes:
        cost = count(arch, args.seq_len)
        label = spec if spec in reference_names() else f"{Path(spec).name} ({arch.id})"
        print(f"{label:<28} {cost.params:>14,} {cost.macs:>16,} {cost.flops / 1e9:>16.3f} G")
    return 0


def _reproduce(args) -> int:
    from nas.reproduce import reproduce_table

    names = reference_names() if args.name == "all" else [reference(args.name).name]
    distill_config = None
    if args.quality:
        from nas.search.settings import DEFAULTS

        distill_config = DEFAULTS.distill_config().replace(seed=args.seed, threads=None)
        if args.distill_steps:
            distill_config = distill_config.replace(steps=args.distill_steps)
    elif args.distill_steps:
        from nas.distill import DistillConfig

        distill_config = DistillConfig(steps=args.distill_steps, seed=args.seed)
    sys.stdout.write(reproduce_table(names, seq_len=args.seq_len, distill_config=distill_config))
    return 0
