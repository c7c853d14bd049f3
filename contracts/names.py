"""Annotation and label names shared across packages.

Annotations ``com.openfaas.quart.*`` describe a pipeline to everything that
reads a function: ``stack.yml`` sets them, the deploy path sends them, the
local provider runs handler folders from them, the plugin groups stages into
pipelines by them and the planner plans them.  The ``com.openfaas.scale.*``
labels are OpenFaaS's own (docs.openfaas.com/architecture/autoscaling).

The content types stages send each other are not here: they are defined and
read only inside the stage handler folder (``functions/stage/codec.py``,
``decoder_wire.py``), which ships alone into a function image and so imports
nothing of ours (``tests/test_layering.py``).
"""
from __future__ import annotations

# ---------------------------------------------------------------- pipeline annotations
ANN_PIPELINE = "com.openfaas.quart.pipeline"  # pipeline name
ANN_STAGE = "com.openfaas.quart.stage"  # this function's stage index, 0-based
ANN_STAGES = "com.openfaas.quart.stages"  # stages in the pipeline
ANN_SLO = "com.openfaas.quart.slo"  # the pipeline's latency SLO, seconds (optional)

# the local provider runs a handler folder as a process (no image): where it is
ANN_HANDLER = "com.openfaas.quart.handler"
ANN_TEMPLATE = "com.openfaas.quart.template"
ANN_WORKDIR = "com.openfaas.quart.workdir"

# ---------------------------------------------------------------- OpenFaaS scaling labels
LABEL_SCALE_MIN = "com.openfaas.scale.min"
LABEL_SCALE_MAX = "com.openfaas.scale.max"
LABEL_SCALE_ZERO = "com.openfaas.scale.zero"  # Pro: "true" lets an idle function go to 0
LABEL_SCALE_ZERO_DURATION = "com.openfaas.scale.zero-duration"  # Pro: idle time first ("5m")
CE_SCALE_MAX = 5  # Community Edition keeps min/max within 1..5
# Pro-only labels that Community Edition rejects. The scale-to-zero pair is not among them:
# Quart's plugin is the idler that reads it (gateway_plugin/policies/idle.py), so a stack that
# asks for it gets it from Quart, on our provider and beside a CE gateway alike.
PRO_ONLY_LABELS = ("com.openfaas.scale.type", "com.openfaas.scale.target",
                   "com.openfaas.scale.target-proportion")
