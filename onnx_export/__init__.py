"""ONNX export of the encoders (planned: see the exported-encoders issue).

Nothing is exported yet; the service runs the torch model.
"""
