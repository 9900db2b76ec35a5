"""FeatherFace ODConv: a lightweight face detector with omni-dimensional dynamic convolution."""

__version__ = "0.1.0"
