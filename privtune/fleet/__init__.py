"""The emulated fleet of phones (issue 7): per-device data shards and per-round conditions.

Built so far: ``shards`` (non-IID device data disjoint from synth's central seed set) and
``conditions`` (seeded availability, dropouts, stragglers, network faults, adversaries).
The worker-pool runner and ``privtune fleet`` come next.
"""
