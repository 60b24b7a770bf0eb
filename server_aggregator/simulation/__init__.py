"""Federated DP at population scale: a vectorized cohort simulator (``privtune simulate``).

N virtual users (non-IID shards of the data outside the synth seed set), Poisson cohort selection
per round, every cohort client's local DP-SGD steps computed together in PyTorch with the phone's
exact rule (``ondevice.trainer.LocalTrainer``), then the server's real ``DpFixedClipping`` and
``ServerAccountant``.
"""
