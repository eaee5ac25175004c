"""Training-side code: data sets and the loops that teach connectors and LoRA.

Builds on ``assistant`` (never the other way round). ``training.data`` holds data generators and
writers for the training row formats.
"""
