"""Side-by-side benchmarks; each writes ``bench/results/<name>.json`` (see ``bench.harness``)."""
