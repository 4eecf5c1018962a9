"""The pipeline's machinery: Detector1 as the ordered stages of the step registry.

``stages`` (a step called as its spec says, the rate products), ``plan`` (all sizing),
``policy`` (which stages run fused per tile, which step by step), ``chain`` (one window read
and taken through the stages as numpy), ``graph`` (the hand-built graphs of windows),
``stats`` (whole-frame statistics), ``fused`` and ``stepwise`` (the two layouts of the same
products), ``checkpoint`` (a step that needs whole frames, fused) and ``submit`` (segments submitted in turn, resumable).  The public entry point is
:func:`daskramp.pipeline.detector1`; ``docs/design.md`` has the map.
"""
