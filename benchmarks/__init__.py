"""Rate-distortion benchmark: classical codecs (JPEG, WebP, JPEG 2000, AVIF, JPEG XL, HEVC intra)
and our models on the evaluation set, with BD-rate tables and plots. Run ``python -m benchmarks rd``."""
