"""The emulated fleet of phones (issue 7): N ``ondevice`` clients against a real aggregator URL.

``shards`` (non-IID device data disjoint from synth's central seed set), ``conditions`` (seeded
availability, dropouts, stragglers, network faults, adversaries), ``adversary`` (the attack
requests), ``network`` (a flaky transport), ``device`` (one phone, one round), ``runner`` (the
worker pool and the round loop behind ``privtune fleet``), ``evaluate`` (a global adapter through
the phone's ORT programs). ``privtune demo`` and the fleet benchmarks come next.
"""
