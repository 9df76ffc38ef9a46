"""resnet-serve on a Ray cluster: the same FastAPI app and DataPlane as Ray Serve replicas.

Outside the serving core: nothing in app/*.py, app/api or app/backends imports this package
(tests/test_layout.py checks it); it imports the core. Ray itself is imported only when a
deployment is built or started, so `resnet-serve --help` works without the `ray` extra.

- sizing.py: Serve's per-replica limits derived from the models' batching.
- deployment.py: the Serve deployment (one replica = create_app + its lifespan) and the
  application builder `app.ray_serve.deployment:build_app` for `serve run` / Serve config files.
- command.py: `resnet-serve ray`, which deploys it on a running cluster.
"""
