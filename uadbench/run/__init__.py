"""Running a grid: the runner's steps, fits, evaluation cells, split preparation, anomaly maps and
their cache, what the tasks gave (outcome), live logs, MLflow tracking and its UI server, and
:mod:`uadbench.run.layout`, the one module that names every cache folder and file.

Imports nothing on its own: ``from uadbench.run.runner import run_grid``.
"""
