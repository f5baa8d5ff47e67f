"""The deploy contract shared by training and the monitor: log-mel front end, CNN backbone,
top-k MIL pooling, window cutting, and the deploy artifact in its two formats (TorchScript
`.pt`, ONNX twin `.onnx`: export, convert, load, predict, scan). Everything that turns audio
into a verdict lives here, once. The base install imports only its torch-free modules (the
ONNX Runtime path); torch is loaded for TorchScript artifacts and for export."""
