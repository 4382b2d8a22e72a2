"""CLIP backbone adaptation, prompt learner and classifiers."""
