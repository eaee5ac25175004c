"""Text-to-image as a chat plugin: ``generate_image`` draws, reads its picture back, and draws again on a miss.

- ``engine``: the built-in scene model or any diffusers pipeline, and the limits on a request;
- ``scene_model``: the project's own small UNet for the scene domain (trained by ``training.text_to_image``);
- ``checker``: reads a scene picture back (colour segmentation, shape geometry), independent of the generator;
- ``prompts``: scene prompts as data, and edits ("make the circle blue");
- ``tool``: the plugin.
"""
