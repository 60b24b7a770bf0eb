"""The demo report puts the floor and every synth baseline beside v0 and the final version."""

from __future__ import annotations

from privtune.demo import comparison_rows


def _metrics(acc: float, f1: float) -> dict[str, float]:
    return {"accuracy": acc, "macro_f1": f1}


def test_comparison_lists_floor_baselines_v0_and_final_in_order() -> None:
    evaluation = {
        "common_rows": [
            {"model": "majority_floor", "label": "always the majority label (no model)", "test": _metrics(0.72, 0.42)},
            {"model": "non_private", "label": "non-private LoRA + head, real data", "test": _metrics(0.83, 0.76)},
        ],
        "epsilons": [
            {
                "shipped": "probe",
                "rows": [
                    {"model": "probe", "label": "DP probe", "test": _metrics(0.75, 0.71), "epsilon_pld": 3.99},
                    {"model": "synthetic", "label": "synthetic", "test": _metrics(0.5, 0.45), "epsilon_pld": 2.0},
                ],
            }
        ],
    }
    versions = [
        {"version": 0, "accuracy": 0.751, "macro_f1": 0.709, "user_epsilon": 0.0},
        {"version": 5, "accuracy": 0.78, "macro_f1": 0.73, "user_epsilon": 12.5},
    ]
    rows = comparison_rows(evaluation, versions)
    assert [r["model"] for r in rows] == [
        "always the majority label (no model)",
        "non-private LoRA + head, real data",
        "DP probe = v0",
        "synthetic",
        "v0 on the phone (ORT): v0",
        "final version on the phone (ORT): v5",
    ]
    assert rows[0]["epsilon"] == 0.0 and rows[1]["epsilon"] == float("inf") and rows[2]["epsilon"] == 3.99
    assert rows[-1]["macro_f1"] == 0.73 and rows[-1]["privacy_unit"].startswith("user")
    assert comparison_rows(None, versions[:1])[0]["model"] == "v0 on the phone (ORT): v0"
