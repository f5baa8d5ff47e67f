"""Training toolkit: datasets, MIL training, evaluation, export and sweeps."""
