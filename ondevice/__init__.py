"""Phone-side runtime and the shared contracts (``ondevice.protocol``). Light: no torch
import on the inference or training path."""
