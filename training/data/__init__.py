"""Training data: a deterministic synthetic visual domain (``scenes``) and its row writers.

``scene_layout`` decides what is in a picture, ``scene_render`` draws it, ``scene_questions`` says
things about it, ``scene_writers`` formats rows (LLaVA and typed messages) and ``scenes`` ties them
into data sets and a command line; none of them loads a model. ``text_rows`` is the exception: it
has the base LLM answer general prompts, giving text-only rows that keep its plain-text behaviour.
"""
