"""The one vocabulary of outcomes: what a distillation run, a search trial and a row of a run's
trials.csv can end as. Only "ok" trials can be Pareto-optimal."""

STATUSES = {
    "ok": "evaluated in full",
    "infeasible": "broke a constraint; scored in milliseconds, never trained",
    "invalid": "the sampler's values are not a genome (a width a head or group count does not divide)",
    "duplicate": "the same genome as an earlier trial; its scores are copied, it is not run again",
    "pruned": "stopped early (successive halving, ASHA, or a distillation callback); its distillation score is partial",
    "diverged": "distillation diverged",
    "crashed": "a scorer raised an error",
    "failed": "its Ray worker or node died more often than max_failures allows",
    "lost": "proposed just before the driver stopped, never run",
    "interrupted": "running when the search was stopped; a resume proposes its genome again",
}
# The ones a distillation run (nas.distill.DistillResult.status) can end with.
DISTILL_STATUSES = ("ok", "diverged", "pruned")
