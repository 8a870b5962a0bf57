"""Training: the fit loop, hyper-parameter search, checkpoints, calibration, and the train stage."""
