"""``nas reproduce``: our numbers for the reference designs beside their published figures."""

from __future__ import annotations

from nas.graph import count
from nas.references import Published, reference

EXPLAIN_ABOVE = 0.02  # relative differences above 2 % get a written explanation


def _relative(ours: float, published: Published | None) -> float | None:
    return None if published is None else ours / published.value - 1.0


def _fmt_rel(rel: float | None) -> str:
    return "-" if rel is None else f"{rel:+.1%}"


def reproduce_rows(names: list[str], seq_len: int = 128) -> list[dict]:
    """One record per reference: counted and published params and FLOPs, with relative differences."""
    rows = []
    for name in names:
        ref = reference(name)
        cost = count(ref.arch, seq_len)
        rows.append(
            {
                "name": name,
                "arch_id": ref.arch.id,
                "params": cost.params,
                "params_published": ref.params.value if ref.params else None,
                "params_rel": _relative(cost.params, ref.params),
                "flops": cost.flops,
                "flops_published": ref.flops.value if ref.flops and seq_len == 128 else None,
                "flops_rel": _relative(cost.flops, ref.flops) if seq_len == 128 else None,
                "elementwise_flops": cost.elementwise,
                "attention_ffn_balance": ref.arch.attention_ffn_balance,
            }
        )
    return rows


def latency_rows(names: list[str]) -> list[dict]:
    """Predicted latency of each reference on every shipped profile that has a published figure."""
    import predictors

    rows = []
    shipped = set(predictors.profile_names())
    for name in names:
        for profile, published in reference(name).latency_ms.items():
            if profile not in shipped:
                continue
            predicted = predictors.load(profile).predict(reference(name).arch)
            rows.append(
                {"name": name, "profile": profile, "predicted_ms": predicted, "published_ms": published.value,
                 "rel": predicted / published.value - 1.0, "note": published.note}
            )
    return rows


def distill_rows(names: list[str], config) -> list[dict]:
    """Each reference's quality score at the given distillation settings (cached per genome and settings)."""
    from nas.distill.run import cached_score

    rows = []
    for name in names:
        record = cached_score(reference(name).arch, config)
        rows.append({"name": name} | record)
    return rows


def reproduce_table(names: list[str], seq_len: int = 128, distill_config=None) -> str:
    rows = reproduce_rows(names, seq_len)
    lines = [
        f"Reference designs: ours counted from the genome (batch 1, seq len {seq_len}) beside the published figures.",
        "FLOPs = 2 x multiply-adds (fvcore's count: projections, attention matmuls, LayerNorm at 5/element).",
        "",
        f"{'design':<18} {'params':>12} {'published':>10} {'diff':>7}   {'FLOPs':>8} {'published':>9} {'diff':>7}   {'+elementwise':>12}  balance",
    ]
    for r in rows:
        pub_p = f"{r['params_published'] / 1e6:.1f}M" if r["params_published"] else "-"
        pub_f = f"{r['flops_published'] / 1e9:.2f}G" if r["flops_published"] else "-"
        lines.append(
            f"{r['name']:<18} {r['params'] / 1e6:>11.2f}M {pub_p:>10} {_fmt_rel(r['params_rel']):>7}   "
            f"{r['flops'] / 1e9:>7.2f}G {pub_f:>9} {_fmt_rel(r['flops_rel']):>7}   "
            f"{(r['flops'] + r['elementwise_flops']) / 1e9:>11.2f}G  {r['attention_ffn_balance']:.2f}"
        )
    notes = []
    for r in rows:
        ref = reference(r["name"])
        for key, rel in (("params", r["params_rel"]), ("flops", r["flops_rel"])):
            if rel is not None and abs(rel) > EXPLAIN_ABOVE:
                why = ref.explanations.get(key, "no explanation recorded")
                notes.append(f"- {r['name']} {key} {_fmt_rel(rel)}: {why}")
    lines += ["", "+elementwise: FLOPs plus the adds, norms, activations and softmax that multiply-adds leave out."]
    lines += ["balance: MHA over FFN parameters of one block (Q/K/V/output projections only)."]
    if notes:
        lines += ["", "Differences above 2 %:"] + notes
    latency = latency_rows(names) if seq_len == 128 else []
    if latency:
        lines += ["", "Latency: predicted by the shipped phone profiles (seq len 128) beside the published figure.",
                  f"{'design':<18} {'profile':<8} {'predicted':>10} {'published':>10} {'diff':>7}   published on"]
        for r in latency:
            lines.append(
                f"{r['name']:<18} {r['profile']:<8} {r['predicted_ms']:>8.0f}ms {r['published_ms']:>8.0f}ms "
                f"{_fmt_rel(r['rel']):>7}   {r['note']}"
            )
        import predictors

        for profile in sorted({r["profile"] for r in latency}):
            prov = predictors.load(profile).provenance
            fitted_on = ", ".join(p["name"] for p in prov.get("fitted_on", []))
            loo = prov.get("leave_one_out_mape")
            loo_text = "undefined" if loo is None else f"{loo:.1%}"
            expected = prov.get("expected_error")
            expected_text = "" if not expected else (
                f" Expected on other genomes with this method and N (bench/latency.py transfer, host settings as new "
                f"devices): MAPE {expected['mape_median']:.0%} ({expected['mape_range'][0]:.0%}-{expected['mape_range'][1]:.0%}).")
            lines.append(
                f"{profile}: fitted on these published figures ({fitted_on}) with {prov.get('free_parameters', '?')} "
                f"free parameters, so the diff above is a fit error; leave-one-out MAPE {loo_text}.{expected_text}"
            )
    if distill_config is not None:
        what = {"lp": "mean accuracy of linear heads on the student's features for the supersense and part of "
                      "speech of WordNet glosses",
                "probe": "accuracy of a linear probe of the student's features on the embedded WordNet supersense task",
                }.get(distill_config.score, "held-out cosine similarity of the student's sentence embedding to the teacher's")
        if distill_config.params_term:
            what += f", plus {distill_config.params_term}"
        lines += ["", f"Quality: distillation of {distill_config.steps} steps (seed {distill_config.seed}), the search's "
                      f"quality signal; score = {what} (higher is better). Cached per genome and settings."]
        lines.append(f"{'design':<18} {'score':>7} {'cosine':>7} {'held-out loss':>14} {'seconds':>8}  status")
        for r in distill_rows(names, distill_config):
            score = "-" if r["score"] is None else f"{r['score']:.3f}"
            cosine = "-" if r["cosine"] is None else f"{r['cosine']:.3f}"
            loss = "-" if r["heldout_loss"] is None else f"{r['heldout_loss']:.4f}"
            secs = "-" if r["seconds"] is None else f"{r['seconds']:.0f}"
            lines.append(f"{r['name']:<18} {score:>7} {cosine:>7} {loss:>14} {secs:>8}  {r['status']}")
    lines += ["", "Sources:"]
    seen = set()
    for r in rows:
        ref = reference(r["name"])
        for published in (ref.params, ref.flops):
            if published and published.source not in seen:
                seen.add(published.source)
                lines.append(f"- {published.source}")
    return "\n".join(lines) + "\n"
