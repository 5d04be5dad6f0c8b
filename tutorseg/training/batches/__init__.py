"""What one training step consumes: the fold's cases, patches cut from them, augmented, made ready ahead.

- ``splits``: nnU-Net's five cross-validation folds (``splits_final.json``).
- ``patch_sampling``: patches for a batch, a third of them forced to contain foreground.
- ``augmentation``: nnU-Net's augmentation set, applied to the whole batch on the training device.
- ``prefetch``: batches sampled in a background thread and copied to the GPU while it computes.
"""
