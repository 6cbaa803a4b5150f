"""distill stage (see README)."""

# Fine-tuning a trained student (make distill's self-distillation, the prune stage's recovery): batch 2 of
# 256x256 crops, the pixels of 8 x 128x128. On 128x128 crops the hyper-latent is a 2x2 grid and the student
# loses what it learnt on larger ones (measurements: pipeline/stages.py, FINETUNE).
FINETUNE_CROPS = dict(crop=256, batch=2)
