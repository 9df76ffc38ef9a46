"""resnet-serve: image classification serving for exported ResNets."""

__version__ = "0.1.0"
