"""The one place that imports guided-diffusion.

Only the modules that import cleanly are used: `dist_util`, `image_datasets` and
`train_util` import mpi4py, which fails to load without an MPI library.
`guided_diffusion.nn` warns about deprecated `torch.cuda.amp` decorators on import;
the warnings are harmless and filtered here once.
"""

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    from guided_diffusion import gaussian_diffusion
    from guided_diffusion.script_util import create_gaussian_diffusion
    from guided_diffusion.unet import AttentionBlock, ResBlock, UNetModel

__all__ = [
    "AttentionBlock",
    "ResBlock",
    "UNetModel",
    "create_gaussian_diffusion",
    "gaussian_diffusion",
]
