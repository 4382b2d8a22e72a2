"""Using a model outside training: read checkpoints, rebuild models from files, extract
features. Training, evaluation, the report and the search commands all come here; nothing
here imports ccafl.training."""
