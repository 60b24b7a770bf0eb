"""``--class-weights`` of ``simulate`` and ``serve``: the per-label weights devices put on clipped gradients."""

from __future__ import annotations

from pathlib import Path

CHOICES_HELP = (
    "Per-label weights on the devices' clipped gradients: none, card (the base classifier's class weights, "
    "from its DP label counts, already in its ledger) or comma-separated values in (0, 1], one per label."
)


def parse_class_weights(text: str, classifier_dir: Path) -> tuple[float, ...] | None:
    """``none`` → None; ``card`` → the weights in ``classifier_dir``/card.json (``privtune synth``'s balanced
    probe stores the ones it derived from its DP label counts, so reusing them costs no further ε); or
    comma-separated numbers. Range checks are ``DpConfig``'s. ValueError otherwise."""
    if text == "none":
        return None
    if text == "card":
        from server_aggregator.synthetic.pipeline import load_card

        try:
            card = load_card(classifier_dir)
        except FileNotFoundError as exc:
            raise ValueError(f"--class-weights card: {exc}; give the weights explicitly or use none") from exc
        weights = card.get("settings", {}).get("class_weights")
        if not weights:
            raise ValueError(
                f"--class-weights card: {classifier_dir}/card.json holds no class_weights (its probe was not "
                "class-balanced); give the weights explicitly or use --class-weights none"
            )
        return tuple(float(w) for w in weights)
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"--class-weights must be none, card or comma-separated numbers, found {text!r}") from None
