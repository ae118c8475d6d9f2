import torch

# Deep randomly initialised nets produce denormal floats, which run ~100x
# slower on x86 CPUs; the trainer flushes them too.
torch.set_flush_denormal(True)
