"""Data: the dataset registry, its readers (ImageFolder, HDF5, Fashion-MNIST, ImageNet, FGVC, CIFAR,
WebDataset shards, Hugging Face datasets), subsets, augmentation and the checks of a dataset tree."""
