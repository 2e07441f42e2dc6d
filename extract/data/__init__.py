"""Data: the dataset registry, its readers (ImageFolder, HDF5, Fashion-MNIST, ImageNet, FGVC),
subsets, augmentation and the checks of a dataset tree."""
