"""Third-party environments plugged in through PettingZoo (examples; their packages are optional).

* ``envs.examples.highway_intersection`` -- highway-env's multi-agent intersection as a
  ``pettingzoo.ParallelEnv`` (needs the ``highway`` extra: ``pip install -e '.[highway]'``).

Nothing here is imported by ``envs`` itself, so the framework never depends on these packages.
"""
