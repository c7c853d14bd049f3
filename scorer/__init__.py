"""The information-theoretic scheduler agent (seed 004), for placing pipeline stages.

It learns how long each kind of work takes on each kind of machine and
ranks the machines for the next piece of work, trading a low expected
runtime against what trying a less-known machine would teach (the seed's
"information-theoretic GPU scheduling").

In Quart-FaaS terms:

* a **job type** is a pipeline stage (e.g. ``minilm-stage-1``: a layer
  range of a model), the unit the plugin places replicas of;
* a **GPU type** is a node type (a pool of identical nodes, e.g.
  ``a100-80gb``, ``l4-24gb``, ``cpu-32c``), the thing a replica is placed on;
* **co-located job types** are the other stages already running on the
  node a replica would share;
* ``measured_runtime_s`` is a stage's service time on that node (e.g. the
  gateway's ``gateway_functions_seconds`` for the replica, or the stage's
  own timing).

The API, the environment variables (``SCHEDULER_*``), their defaults, the
metric names and the cost formula are the seed's:

    cost(j, g) = mu[j,g] + lambda * sqrt(sigma^2[j,g]) - beta * IG[j,g]
                 + gamma * interference_penalty(j, g, colocated)
    IG[j,g]    = 0.5 * log(1 + sigma^2[j,g] / tau^2[j,g])

Modules (each small, each pure where it can be):

  config.py    ScorerConfig from the environment (the table of variables)
  model.py     beliefs, the cost, the exploration cap, interference learning (pure)
  sinkhorn.py  optional batched assignment by entropic optimal transport (pure)
  validate.py  request bodies -> typed requests, or a 422 naming the field
  store.py     Redis (primary), SQLite or memory backends
  service.py   the model behind a lock, written through to the store, outage handling
  metrics.py   the Prometheus collector (``scheduler_*``)
  app.py       the Flask routes
  cli.py       ``main(argv)``: waitress, signals, the flusher thread

Run: ``python -m scorer --port 8085`` (or ``quart-faas scorer``).
"""
