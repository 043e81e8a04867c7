"""cruncher's KLIP engine: pyKLIP's ``klip_dataset`` mathematics, organised for speed and memory.

``engine.klip_dataset`` takes pyKLIP's dataset and parameters and writes pyKLIP's files;
``resample`` reproduces its interpolations, ``sections`` its geometry and reference criteria,
``core`` its per-section linear algebra, ``output`` its collapses. A job picks it with
``engine = "fast"`` (the default) or pyKLIP itself with ``engine = "pyklip"``.
"""
