"""Small text helpers shared by the CLI, benchmarks and README generation."""
from __future__ import annotations

from typing import Sequence


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table (no trailing newline)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def eval_markdown(report: dict) -> str:
    """Markdown table of an ``evaluate`` result: accuracy, images and time per attack."""
    rows = []
    for attack, acc in report["accuracy"].items():
        steps = report.get("steps", {}).get(attack)
        rows.append([attack + (f"-{steps}" if steps else ""), f"{100 * acc:.2f}", str(report["n_images"][attack]),
                     f"{report['seconds'][attack]:.0f}"])
    head = (f"{report['dataset']} {report['backbone']} {report['stage']}, eps={report['eps']:.4f}, "
            f"seed={report['seed']}, {report['split']} split")
    return head + "\n\n" + markdown_table(["attack", "accuracy %", "images", "seconds"], rows)


def pct(value: float) -> str:
    return f"{100 * value:.2f}"


def causal_markdown(result: dict) -> str:
    """Markdown tables of a causal analysis result (accuracies, KL, controls, eps_inv sweep)."""
    acc = result["accuracy"]
    names = ["natural", "adversarial", "causal", "counterfactual", "causal_of_counterfactual", "inverted"]
    attack = result["attack"]
    lines = [f"Causal analysis: {result.get('dataset', '')} {result.get('backbone', '')}, "
             f"{attack['name']}-{attack['steps']} eps={attack['eps']:.4f}, eps_inv={result['inversion']['eps_inv']:.4f} "
             f"({result['inversion']['steps']} steps), {result['n_images']} test images.", ""]
    lines.append(markdown_table(["prediction", "accuracy %"], [[n, pct(acc[n])] for n in names]))
    lines.append("")
    h0, sh = result["controls"]["h_zero"], result["controls"]["shuffled_z"]
    rows = [["trained h", pct(acc["causal"]), pct(acc["inverted"])] +
            [f"{result['kl_x1000'][k]:.2f}" for k in ("inversion", "clean", "adversarial")]]
    for label, ctl in (("control h = 0", h0), ("control h(shuffled Z)", sh)):
        rows.append([label, pct(ctl["accuracy"]["causal"]), pct(ctl["accuracy"]["inverted"])] +
                    [f"{ctl['kl_x1000'][k]:.2f}" for k in ("inversion", "clean", "adversarial")])
    lines.append(markdown_table(["causal target", "causal acc %", "inverted acc %", "KL(inv||causal) x1000",
                                 "KL(clean||causal) x1000", "KL(adv||causal) x1000"], rows))
    gain = 100 * (acc["causal"] - acc["natural"])
    gap = 100 * (acc["counterfactual"] - acc["adversarial"])
    kl = result["kl_x1000"]
    verdict = lambda ok: "yes" if ok else "no"  # noqa: E731
    lines += ["", "Paper's claims, checked:", "",
              f"- Causal recovers what the attack took (Causal - Natural = {gain:+.2f} points, target >= -1): "
              f"{verdict(gain >= -1)}",
              f"- Counterfactual falls far below Adversarial (CF - Adv = {gap:+.2f} points, target <= -20): "
              f"{verdict(gap <= -20)}",
              f"- KL(inv||causal) < KL(clean||causal) and < KL(adv||causal) ({kl['inversion']:.2f} vs "
              f"{kl['clean']:.2f} and {kl['adversarial']:.2f}): "
              f"{verdict(kl['inversion'] < kl['clean'] and kl['inversion'] < kl['adversarial'])}",
              f"- What h adds beyond the clean feature: Causal - (h = 0 control) = "
              f"{100 * (acc['causal'] - h0['accuracy']['causal']):+.2f} points; "
              f"Causal - (h on shuffled Z) = {100 * (acc['causal'] - sh['accuracy']['causal']):+.2f} points"]
    ratio = result["norm_ratio"]
    lines += ["", f"Mean ||h(Z)||/||Z|| = {ratio['h_z_over_z']:.3f}, ||g(Z)||/||Z|| = {ratio['g_z_over_z']:.3f}."]
    if result.get("eps_inv_sweep"):
        lines.append("")
        lines.append(markdown_table(
            ["eps_inv", "images", "KL(inv||causal) x1000", "KL(clean||causal) x1000", "KL(adv||causal) x1000",
             "inverted acc %", "h=0: KL(inv||natural) x1000"],
            [[f"{s['eps_inv']:.4f}", str(s["n_images"])] +
             [f"{s['kl_x1000'][k]:.2f}" for k in ("inversion", "clean", "adversarial")] +
             [pct(s["inverted_accuracy"]), f"{s['h_zero_kl_x1000']['inversion']:.2f}"] for s in result["eps_inv_sweep"]]))
    return "\n".join(lines)
