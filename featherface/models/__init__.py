"""Models: backbone, heads, the FeatherFace assembly, the registry and checkpoint loading."""
