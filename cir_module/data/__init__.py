"""Data: the procedurally generated "shapes" scenes used by the demo and the benchmark."""
