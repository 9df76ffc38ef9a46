"""Offline tooling: export, quantisation, fidelity checks, image folders and training recipes.

The serving core (app/*.py, app/api, app/backends) never imports this package."""
