"""The synthetic "shapes" benchmark used by the demo, the ablations and the shipped model.

- :mod:`~cir_module.data.shapes`: scenes of shapes on a 3x3 grid, rendering, edits, phrasing;
- :mod:`~cir_module.data.benchmark`: the CIRR-format generator and the scene-graph reader;
- built on the scene graphs: :mod:`~cir_module.data.reasoning` (template reasoning paths) and
  :mod:`~cir_module.data.captions` (the scene-graph captioner for RAR enrichment); the
  trainer's auxiliary scene loss over them is :mod:`cir_module.training.scene_loss`.

The service and the models never import this package.
"""
