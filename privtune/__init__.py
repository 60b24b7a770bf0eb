"""privtune: the ``privtune`` command that ties export, ondevice and server_aggregator together."""

__version__ = "0.1.0"
