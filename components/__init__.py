"""Reusable logic of the fmnist jobs: data set preparation, training, scoring, storage."""
