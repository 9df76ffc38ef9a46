"""The torch side of serving: the uint8-in graph (models), the runner on a device with its own
stream, GPU JPEG decoding, and the two backends built on them (eager, torchscript).

Nothing here is imported unless a model asks for a torch backend or the export tool runs."""
