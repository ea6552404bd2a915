"""Embedded data (Fashion-MNIST shoes, MIT license: see FASHION_MNIST_LICENSE.txt)."""
