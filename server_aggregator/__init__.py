"""The aggregation service (DP-FedAvg, privacy ledger, publishing) and the DP synthetic-data
pipeline. Not built yet: see issues 5 and 6."""
