"""Pure tensor functions without state or I/O: priors, box and landmark coding, IoU, NMS."""
