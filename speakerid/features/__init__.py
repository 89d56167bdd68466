"""Front-ends: 16 kHz fragments -> the encoder's input features.

``numpy`` holds the torch-free implementations the ONNX runtime uses; ``torch`` holds the
batched torch modules training and the torch backend use. The two are tested equal.
"""
