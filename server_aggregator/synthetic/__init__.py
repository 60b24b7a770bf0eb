"""The synthetic-data stage: DP-fine-tune a generator on the private seed set, sample labelled
synthetic text, train the base safety classifier on it only (``privtune synth``)."""
