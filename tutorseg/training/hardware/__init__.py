"""Where a training step computes: one device and its precision, or one fold on several GPUs.

- ``device``: GPU or CPU, mixed precision, threads, and the messages for a missing GPU or an out-of-memory error.
- ``distributed``: DistributedDataParallel under ``torchrun``, each GPU its share of the batch.
"""
