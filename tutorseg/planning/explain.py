"""Plans explained: every decision with its rule, the numbers it used and the outcome, as text or HTML."""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations: artefacts imports this module to explain a plan
    from tutorseg.planning.artefacts import Decision, Plan


# one colour per kind of decision (nnU-Net's fixed / rule-based / empirical), in the HTML tables and in
# tutorseg.viz.plot_pipeline
KIND_COLOURS = {"fixed": "#777777", "rule": "#1f6fb2", "empirical": "#b26b1f"}


def _value(value) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def _decision_text(d: Decision) -> str:
    lines = [f"  {d.name} = {_value(d.to_dict()['value'])}   [{d.kind}]",
             f"      rule: {d.rule}"]
    if d.because:
        lines.append(f"      here: {d.because}")
    return "\n".join(lines)


def planned_for(plan: Plan) -> str:
    """What the plan was made for: a GPU's memory (and preset), or a training budget on a measured device."""
    budget = next((d for d in plan.decisions if d.name == "budget"), None)
    if budget is not None:  # each configuration has its own memory target then (see its budget decision)
        seconds = budget.value["budget_s"]
        length = f"{seconds / 60:.3g} minutes" if seconds >= 60 else f"{seconds:g} seconds"
        return f"a training budget of {length} on {budget.value['device']}"
    return f"{plan.gpu_memory_gb:g} GB GPU memory" + (f", preset '{plan.preset}'" if plan.preset else "")


def explain_text(plan: Plan, configuration: str | None = None) -> str:
    """The explanation of ``plan`` (or of one configuration) as plain text."""
    head = (f"Plan for {plan.dataset_name}: {plan.num_training_cases} cases, {planned_for(plan)}"
            f"\nAxis order: {plan.axis_order}")
    parts = [head, "", "Dataset-wide decisions:"] + [_decision_text(d) for d in plan.decisions]
    names = [configuration] if configuration else list(plan.configurations)
    for name in names:
        config = plan[name]
        parts += ["", f"Configuration {name}: patch {list(config.patch_size)} x batch {config.batch_size}, "
                      f"{config.n_stages} stages"]
        parts += [_decision_text(d) for d in config.decisions]
    return "\n".join(parts)


def _decision_row(d: Decision) -> str:
    kind_colour = KIND_COLOURS.get(d.kind, "#000")
    return (f"<tr><td style='text-align:left'><b>{html.escape(d.name)}</b></td>"
            f"<td style='text-align:left'><code>{html.escape(_value(d.to_dict()['value']))}</code></td>"
            f"<td style='color:{kind_colour}'>{d.kind}</td>"
            f"<td style='text-align:left'>{html.escape(d.because or d.rule)}"
            f"<br><small style='color:#666'>rule: {html.escape(d.rule)}</small></td></tr>")


def _table(decisions) -> str:
    return ("<table><tr><th>decision</th><th>value</th><th>kind</th><th>why</th></tr>"
            + "".join(_decision_row(d) for d in decisions) + "</table>")


def explain_html(plan: Plan) -> str:
    """The explanation as HTML (the notebook's view of a plan)."""
    parts = [f"<h4>Plan for {html.escape(plan.dataset_name)}: {plan.num_training_cases} cases, "
             f"{html.escape(planned_for(plan))}</h4>",
             f"<p><small>{html.escape(plan.axis_order)}</small></p>", "<b>Dataset-wide</b>", _table(plan.decisions)]
    for name, config in plan.configurations.items():
        parts.append(f"<details{' open' if name == plan.default_configuration else ''}><summary><b>{name}</b>: "
                     f"patch {list(config.patch_size)} x batch {config.batch_size}, {config.n_stages} stages"
                     f"</summary>{_table(config.decisions)}</details>")
    return "\n".join(parts)


def diff_plans(old: Plan, new: Plan) -> list[str]:
    """What changed between two plans (configurations, patch, batch, stages, features), one line per change.

    Used by the notebook's GPU-memory widget to say what a different budget changes, and why.
    """
    lines = []
    for name in sorted(set(old.configurations) | set(new.configurations)):
        if name not in new.configurations:
            lines.append(f"{name}: no longer planned")
            continue
        if name not in old.configurations:
            lines.append(f"{name}: now planned ({new[name].decision('patch_size').because})")
            continue
        a, b = old[name], new[name]
        for field in ("patch_size", "batch_size", "n_stages", "features_per_stage", "spacing"):
            before, after = getattr(a, field), getattr(b, field)
            if before != after:
                reason = b.decision(field).because if field in ("patch_size", "batch_size") else ""
                lines.append(f"{name} {field}: {_value(list(before) if isinstance(before, tuple) else before)} -> "
                             f"{_value(list(after) if isinstance(after, tuple) else after)}"
                             + (f" ({reason})" if reason else ""))
    return lines or ["nothing changed"]
