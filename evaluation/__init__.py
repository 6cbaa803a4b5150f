"""Rate-distortion measurement, shared by every stage that reports quality: codecs behind one interface
(ours, Pillow's JPEG, the classical command-line codecs), coding the evaluation photos into real files
(rates from their bytes), BD-rate, and the machine a figure ran on. The benchmark commands (benchmarks/)
and the stages that check their results (distill/, export/) build on it."""
