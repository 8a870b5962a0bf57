"""Watching a deployed model's inputs: is new data like the data the model was trained on?"""
