"""Model families: ADM (guided-diffusion) presets and their block tables, latent diffusion
(diffusers), torchvision backbones, raw pixels; noise, pooling and checkpoint I/O."""
