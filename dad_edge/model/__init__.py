"""The networks and the pure DiffusionAD module: config, noise schedule, U-Net, segmentation net, losses (torch)."""
