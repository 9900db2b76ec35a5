"""Neural-network modules: ODConv, CBAM, conv blocks, BiFPN, SSH."""
