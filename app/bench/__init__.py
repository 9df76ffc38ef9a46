"""`resnet-serve bench`: load generation against a running server, and the backend alone.

Modules, one job each:
  options.py    the command's arguments (stdlib only: app.cli imports it to build its parser)
  payload.py    image files -> ready-made request bodies (raw, multipart, V2 binary)
  client.py     keep-alive HTTP/1.1 connections; closed-loop and open-loop (Poisson) load
  stats.py      one step's counts and latency percentiles
  progress.py   the progress line on stderr
  report.py     tables, JSON, and the latency-against-throughput plot
  inprocess.py  the backend alone per batch size, and the decoder per image
  run.py        the command itself: wires the above together

Nothing here is imported unless the `bench` command runs.
"""
