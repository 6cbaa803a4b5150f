"""Training: the loop shared by the teacher and the students, its checkpoints, and the crops it draws.

    TrainConfig, Trainer      one run (RD loss, variable rate, EMA, snapshots, resumable, torchrun)
    rd_loss, distortion       the rate-distortion loss (6:1:1 MSE, or the PSNR-YUV metric's gradient)
    CropDataset               random crops, detail-weighted, from downscaled copies too
    export_trained, ...       weights with their step and training time; continuing from shipped weights
"""
from .checkpoints import (CheckpointError, checkpoint_train_seconds, continue_from, export_checkpoint,
                          export_trained, load_checkpoint, log_train_seconds, plot_log)
from .crops import CropDataset, detail_energy, detail_map, downscale
from .loop import ENCODER_MODULES, TrainConfig, Trainer, auto_threads, dist_info, lr_at
from .loss import DISTORTIONS, distortion, rd_loss

__all__ = ["CheckpointError", "CropDataset", "DISTORTIONS", "ENCODER_MODULES", "TrainConfig", "Trainer",
           "auto_threads", "checkpoint_train_seconds", "continue_from", "detail_energy", "detail_map", "dist_info",
           "distortion", "downscale", "export_checkpoint", "export_trained", "load_checkpoint", "log_train_seconds",
           "lr_at", "plot_log", "rd_loss"]
