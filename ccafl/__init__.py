"""CCAFL: CLIP-based camera-agnostic feature learning for intra-camera supervised person ReID."""

__version__ = "0.1.0"
