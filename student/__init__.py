"""Student codecs under the 2 kMAC/px budget: depthwise-separable, ShuffleNet-style and PixelShuffle blocks."""
