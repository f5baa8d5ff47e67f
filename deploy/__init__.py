"""The deploy contract shared by training and the monitor: log-mel front end, CNN backbone,
top-k MIL pooling, window cutting, and the TorchScript deploy artifact (export, load, predict,
scan). Everything that turns audio into a verdict lives here, once."""
