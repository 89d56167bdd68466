"""speakerid: recognise people by their voice with a trained twin (siamese) encoder."""

__version__ = "0.1.0"
