"""Contracts: the names and formats that several of our packages must agree on.

The pipeline annotations and scaling labels of a function, the content types
stages send each other, the ``Server-Timing`` format, CPU quantities, the
partition manifest and the faas-cli ``stack.yml`` reader each have one home
here, so a writer and its readers cannot drift apart.  ``wire`` is how our
services define a JSON body once, as a pydantic model that both validates it
and documents it.

A leaf: nothing here imports any other package of this repository
(``tests/test_layering.py`` checks it), so every layer may import it.
"""
