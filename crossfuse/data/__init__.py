"""The data layer: the manifest contract, DVC versions, the sample dataset, validation, preprocessing."""
