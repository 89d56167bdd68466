"""Encoders: architectures (``campp``, ``ecapa``, the twin wrapper in ``twin``), their
configuration (``config``), what a checkpoint says about itself without torch
(``checkpoint``), pretrained networks used as front-ends or teachers (``pretrained``) and
the shipped models by name (``registry``).
"""
