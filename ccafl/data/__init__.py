"""Datasets, ICS relabelling, samplers, transforms and the synthetic benchmark."""
