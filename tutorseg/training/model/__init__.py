"""The model: the network a plan builds, the loss it learns from, and the sliding window that applies it to an image.

- ``network``: :func:`build_network`, nnU-Net's plain U-Net (MONAI's ``DynUNet``) or the residual one.
- ``residual_unet``: the ResEnc presets' ``ResidualEncoderUNet``.
- ``loss``: Dice + cross-entropy (or + BCE for regions) on every deep-supervision output.
- ``sliding_window``: Gaussian-weighted sliding-window prediction with mirroring (validation and prediction).
"""
